#!/usr/bin/env bash
# One pipeline step: apply a rollout spec and wait for its outcome. The exit
# code is the pipeline's (docs/pipeline.md): 0 completed, 3 aborted (the
# canary is back at 0%), 4 timed out, 5 waiting for approval, 6 controller
# unreachable, 1 anything else (a refused spec, a bad token).
# Needs `dimmer` on PATH, DIMMER_SERVER and DIMMER_TOKEN (an operator's).
set -euo pipefail
spec="${1:?usage: rollout.sh SPEC.yaml [TIMEOUT]}"
timeout="${2:-30m}"
dimmer apply -f "$spec" --dry-run
exec dimmer apply -f "$spec" --wait --timeout "$timeout"
