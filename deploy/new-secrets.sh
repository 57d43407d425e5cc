#!/usr/bin/env bash
# Writes the inputs of the controller's Secret and of the filter's poll
# token into deploy/secrets/ (kept out of git by its .gitignore):
#   tokens.yaml   every role's token (admin, operator, viewer, proxy)
#   audit.key     the audit log's key: 64 hex digits; it must outlive the
#                 controllers, and every controller of a fleet gets the same
#   viewer-token  for Prometheus' ServiceMonitor
#   proxy-token   the filter's poll token, also written into
#   filter-token/token.yaml, the patch the Istio and Envoy Gateway overlays
#                 apply, so the filter polls with the Secret's own token.
# Then: kubectl apply -k deploy/overlays/single (or fleet, istio, …).
# Refuses to replace an audit key (records it checked would no longer
# verify) unless FORCE=1.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
dimmer="${DIMMER:-dimmer}"
if [ -e "$dir/audit.key" ] && [ -z "${FORCE:-}" ]; then
  echo "$dir/audit.key exists: the audit key must outlive the controllers (FORCE=1 replaces every secret)" >&2
  exit 1
fi
# 64 hex digits from the operating system's random source, by dimmer itself.
new() { "$dimmer" audit new-key; }
admin=$(new); operator=$(new); viewer=$(new); proxy=$(new); key=$(new)
umask 077
mkdir -p "$dir/filter-token"
printf '%s\n' "$key" > "$dir/audit.key"
printf '%s' "$viewer" > "$dir/viewer-token"
printf '%s' "$proxy" > "$dir/proxy-token"
cat > "$dir/tokens.yaml" <<YAML
tokens:
  - {name: release-manager, role: admin, token: "$admin"}
  - {name: deploy-bot, role: operator, token: "$operator"}
  - {name: prometheus, role: viewer, token: "$viewer"}
  - {name: envoy, role: proxy, token: "$proxy"}
YAML
cat > "$dir/filter-token/token.yaml" <<YAML
# Written by deploy/new-secrets.sh: the filter's poll token, the proxy
# token of the controller's Secret.
- op: replace
  path: /spec/pluginConfig/controller/token
  value: "$proxy"
YAML
echo "wrote $dir: tokens for admin, operator, viewer and proxy; the audit key; the filter's token"
echo "the operator token (for CI's DIMMER_TOKEN): $operator"
