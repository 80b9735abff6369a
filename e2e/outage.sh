#!/usr/bin/env bash
# The outage benchmark: 1,000 real sidecars' watches through a 30 s API server outage
# (e2e/src/bin/kubevirt-bmc-outage.rs). A measurement, not a test.
#   e2e/outage.sh [--sidecars N] [--outage-seconds S] [--after-seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kubevirt-bmc -p kubevirt-bmc-e2e --bins
# The fake API server holds two watch connections per sidecar.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
exec target/release/kubevirt-bmc-outage "$@"
