#!/usr/bin/env bash
# The scale command: the release kubevirt-bmc-webhook (controller + admission, leader election
# on) against the fake API server with 10,000 VMs (1,000 opted in) and 2,000 launcher Pods;
# prints cold-reconcile time, RSS, steady-state requests by verb and resource, admission p99.
#   e2e/scale.sh [--vms 10000] [--opted-in 1000] [--pods 2000] [--steady-seconds 330]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
cargo build --release -p kubevirt-bmc-webhook -p kubevirt-bmc-e2e --bins
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
exec target/release/kubevirt-bmc-scale "$@"
