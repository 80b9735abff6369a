#!/usr/bin/env bash
# The comparison table: builds the release binaries, starts kubevirt-bmc simulate, the
# pyghmi BMC, sushy-emulator (fake driver, HTTPS) and the webhook, measures them with the
# same clients in one run and prints one Markdown table with the machine it ran on.
#   e2e/bench.sh [--seconds N]        (N seconds per cell, default 5)
# Needs the clients e2e/setup.sh installs (wrk; pyghmi and sushy-tools in the venv).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export KUBEVIRT_BMC_VENV=${KUBEVIRT_BMC_VENV:-$top/target/venv}
cargo build --release -p kubevirt-bmc -p kubevirt-bmc-webhook -p kubevirt-bmc-e2e --bins
exec target/release/kubevirt-bmc-bench "$@"
