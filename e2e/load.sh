#!/usr/bin/env bash
# The load command: 1000 IPMI lanplus sessions + 100 Redfish HTTPS clients against one
# release kubevirt-bmc simulate for 60 s; exits non-zero on any error or memory growth.
#   e2e/load.sh [--seconds 60] [--ipmi-sessions 1000] [--redfish-clients 100]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -p kubevirt-bmc -p kubevirt-bmc-e2e --bins
# One UDP socket per IPMI session plus the HTTPS connections: raise a low open-file limit.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
exec target/release/kubevirt-bmc-load "$@"
