#!/usr/bin/env bash
# The one test command: installs the real clients when missing, checks the dependency
# rules and formatting, then runs every test of the workspace.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash e2e/setup.sh
export KUBEVIRT_BMC_VENV=${KUBEVIRT_BMC_VENV:-$top/target/venv}
bash e2e/check-deps.sh
cargo fmt --all --check
cargo build --workspace --bins
cargo test --workspace --all-targets "$@"
