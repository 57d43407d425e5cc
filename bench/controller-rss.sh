#!/usr/bin/env bash
# The controller's resident memory, idle and once N proxies have polled: the
# footprint deploy/controller/dimmer.yaml's requests and limits come from.
# Usage: bench/controller-rss.sh [DIMMER_BINARY] [N]   (after `make build`)
set -euo pipefail
bin="${1:-target/release/dimmer}"
n="${2:-2000}"
dir="$(mktemp -d)"
port=18123
"$bin" serve --no-auth --listen "127.0.0.1:$port" --db "$dir/d.db" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 / 1000 " MB"}' "/proc/$pid/status"; }
echo "idle: $(rss)"
for i in $(seq "$n"); do
  curl -s -o /dev/null -H "x-dimmer-proxy-id: p$i" -H 'x-dimmer-revision: 0' \
    "http://127.0.0.1:$port/v1/config"
done
echo "after $n proxies polled: $(rss)"
