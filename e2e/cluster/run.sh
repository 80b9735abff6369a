#!/usr/bin/env bash
# The whole real-cluster flow: bring the cluster up (idempotent), then run the gated tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/up.sh"
. "$here/versions.env"
KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
export KUBECONFIG KUBEVIRT_BMC_E2E_CLUSTER=1
cd "$here/../.."
cargo test -p kubevirt-bmc-e2e --test cluster -- --test-threads=1 --nocapture
