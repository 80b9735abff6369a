#!/usr/bin/env bash
# Brings up a kind cluster with KubeVirt (software emulation), CDI and cert-manager, builds
# our image from the Dockerfile, loads it into the cluster and installs manifests/ with the
# cert-manager overlay. Needs docker (or podman), kind and kubectl on PATH, and internet.
# Afterwards: `KUBECONFIG=$(kind get kubeconfig-path) cargo test -p kubevirt-bmc-e2e --test cluster`
# or simply e2e/cluster/run.sh, which does both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is needed on PATH" >&2; exit 2; }
done

if ! kind get clusters | grep -qx "$CLUSTER_NAME"; then
  kind create cluster --name "$CLUSTER_NAME" --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER_NAME"

echo "== cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager wait deploy --all --for=condition=Available --timeout=300s

echo "== KubeVirt $KUBEVIRT_VERSION (software emulation: kind nodes have no /dev/kvm)"
kubectl apply -f "https://github.com/kubevirt/kubevirt/releases/download/$KUBEVIRT_VERSION/kubevirt-operator.yaml"
kubectl apply -f "https://github.com/kubevirt/kubevirt/releases/download/$KUBEVIRT_VERSION/kubevirt-cr.yaml"
kubectl -n kubevirt patch kubevirt kubevirt --type merge \
  -p '{"spec":{"configuration":{"developerConfiguration":{"useEmulation":true}}}}'
kubectl -n kubevirt wait kv kubevirt --for=condition=Available --timeout=600s

echo "== CDI $CDI_VERSION"
kubectl apply -f "https://github.com/kubevirt/containerized-data-importer/releases/download/$CDI_VERSION/cdi-operator.yaml"
kubectl apply -f "https://github.com/kubevirt/containerized-data-importer/releases/download/$CDI_VERSION/cdi-cr.yaml"
kubectl wait cdi cdi --for=condition=Available --timeout=600s

echo "== kubevirt-bmc image $IMAGE"
docker build -t "$IMAGE" "$top"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

echo "== kubevirt-bmc manifests (cert-manager overlay)"
overlay=$(mktemp -d)
cat >"$overlay/kustomization.yaml" <<KUSTOMIZE
resources:
  - $top/manifests/overlays/cert-manager
images:
  - name: kubevirt-bmc
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
KUSTOMIZE
kubectl apply -k "$overlay"
kubectl -n kubevirt-bmc rollout status deploy/kubevirt-bmc-webhook --timeout=300s
echo "cluster ready: KUBECONFIG context kind-$CLUSTER_NAME"
