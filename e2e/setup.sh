#!/usr/bin/env bash
# Installs what the tests drive: real IPMI and Redfish clients and the peers we compare with.
# Idempotent and quick when everything is present. Python tools go into a venv under target/.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv=${KUBEVIRT_BMC_VENV:-$top/target/venv}

apt_packages=(ipmitool freeipmi-tools wrk tmux openssl python3-venv)
apt_packages+=(curl) # Redfish tests: HTTP/2, keep-alive and raw requests
apt_packages+=(socat) # Ironic's ipmitool-socat console (e2e/tests/ironic.rs)
apt_packages+=(podman) # e2e/tests/image.rs builds the Dockerfile's runtime stage (vfs storage)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

requirements="$top/e2e/requirements.txt"
# Every transitive dependency pinned too, so an upstream release cannot break CI.
constraints="$top/e2e/constraints.txt"
stamp="$venv/.requirements.sha256"
want=$(cat "$requirements" "$constraints" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating Python venv at $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" -c "$constraints"
  echo "$want" >"$stamp"
fi
