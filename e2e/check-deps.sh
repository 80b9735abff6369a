#!/usr/bin/env bash
# Fails when a crate we ban enters the dependency tree: aws-lc (we use ring), serde_yaml
# (unmaintained), or a json-patch other than 4.x (kube 5 uses 4.x; two copies would not mix).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree --workspace --target all -e normal,build,dev --prefix none --format '{p}' 2>/dev/null | sort -u)
status=0
for banned in aws-lc-sys aws-lc-rs serde_yaml; do
  if grep -q "^$banned v" <<<"$tree"; then
    echo "check-deps: banned crate $banned is in the dependency tree:" >&2
    cargo tree --workspace --target all -e normal,build,dev -i "$banned" >&2 || true
    status=1
  fi
done
if grep -E '^json-patch v' <<<"$tree" | grep -vq '^json-patch v4\.'; then
  echo "check-deps: json-patch must be 4.x (kube's); found: $(grep -E '^json-patch v' <<<"$tree" | tr '\n' ' ')" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "check-deps: ok (no aws-lc, no serde_yaml, json-patch 4.x)"
exit "$status"
