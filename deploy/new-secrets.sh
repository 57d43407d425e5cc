#!/usr/bin/env bash
# Writes the inputs of the controller's Secret and of the filter's poll
# token into deploy/secrets/ (kept out of git by its .gitignore):
#   tokens.yaml   every role's token as a SHA-256 digest (dimmer token create);
#                 admin-token and operator-token hold two of the tokens for you
#   audit.key     the audit log's key: 64 hex digits; it must outlive the
#                 controllers, and every controller of a fleet gets the same
#   viewer-token  for Prometheus' ServiceMonitor
#   proxy-token   the filter's poll token, also written into
#   filter-token/token.yaml, the patch the Istio overlay applies, and
#   envoyfilter/envoyfilter.yaml, the EnvoyFilter alternative with the token
#                 in its JSON, so the filter polls with the Secret's own token.
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
umask 077
mkdir -p "$dir/filter-token" "$dir/envoyfilter"
# Every token by `dimmer token create`: tokens.yaml keeps only digests; the
# tokens themselves go to files beside it, for you (admin-token,
# operator-token) and for what must present them (viewer-token for
# Prometheus, proxy-token for the filter).
tokens="$dir/tokens.yaml"
rm -f "$tokens"
create() {
  "$dimmer" token create "$1" --role "$2" --file "$tokens" 2>"$dir/.said" || { cat "$dir/.said" >&2; exit 1; }
}
admin=$(create release-manager admin)
operator=$(create deploy-bot operator)
viewer=$(create prometheus viewer)
proxy=$(create envoy proxy)
"$dimmer" audit new-key > "$dir/audit.key"
rm -f "$dir/.said"
printf '%s' "$admin" > "$dir/admin-token"
printf '%s' "$operator" > "$dir/operator-token"
printf '%s' "$viewer" > "$dir/viewer-token"
printf '%s' "$proxy" > "$dir/proxy-token"
cat > "$dir/filter-token/token.yaml" <<YAML
# Written by deploy/new-secrets.sh: the filter's poll token, the proxy
# token of the controller's Secret.
- op: replace
  path: /spec/pluginConfig/controller/token
  value: "$proxy"
YAML
# The EnvoyFilter carries its config as a JSON string kustomize cannot
# patch into: written whole, from the shipped one, with the token in it.
placeholder='<the proxy token in deploy/secrets/proxy-token, made by deploy/new-secrets.sh>'
sed "s|$placeholder|$proxy|" "$(dirname "$0")/istio/envoyfilter.yaml" > "$dir/envoyfilter/envoyfilter.yaml"
if grep -q '<the proxy token' "$dir/envoyfilter/envoyfilter.yaml"; then
  echo "deploy/istio/envoyfilter.yaml: its token placeholder changed; $dir/envoyfilter/envoyfilter.yaml still has one" >&2
  exit 1
fi
echo "wrote $dir: tokens.yaml (digests only), the audit key, the filter's token patch; the tokens themselves in admin-token, operator-token (CI's DIMMER_TOKEN), viewer-token, proxy-token"
