#!/usr/bin/env bash
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
kind delete cluster --name "$CLUSTER_NAME"
