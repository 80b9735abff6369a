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
# The image's static binaries: e2e/tests/image.rs runs them in an empty root and builds the
# Dockerfile's runtime stage from them.
cargo static-bins
cargo test --workspace --all-targets "$@"
