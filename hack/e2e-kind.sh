#!/usr/bin/env bash
# hack/e2e-kind.sh [go test flags...] — the body of `make e2e-kind`: the same e2e suite
# (e2e/, build tag e2e) on a kind cluster. Needs a Docker engine (kind runs nodes as
# containers); without one it stops at once. Vault runs on this host, listening on the
# kind network's gateway address so that the node (and the driver in it) can reach it.
#   KIND_NODE_IMAGE=kindest/node:v1.35.x bash hack/e2e-kind.sh   # another node image
#   E2E_KEEP_CLUSTER=1 bash hack/e2e-kind.sh                      # keep the cluster afterwards
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=$PATH:/usr/local/go/bin
die() { echo "hack/e2e-kind.sh: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 \
  || die "no docker CLI. make e2e-kind needs a Docker engine (kind runs Kubernetes nodes as containers); without Docker, use make e2e (a local cluster with no Docker)."
timeout 15 docker info >/dev/null 2>&1 \
  || die "no Docker engine answers (docker info failed or timed out). Start Docker, or use make e2e."

KIND_VERSION=v0.33.0
cluster=${KIND_CLUSTER_NAME:-vault-csi-e2e}
kind=$root/.cache/tools/kind-$KIND_VERSION/kind
. "$root/hack/lib-cache.sh"
if [ ! -x "$kind" ]; then
  echo "building kind $KIND_VERSION into $(dirname "$kind")" >&2
  GOBIN=$(dirname "$kind") CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
vault_bin=$(bash hack/build-tool.sh hack/vault vault)
helm_bin=$(bash hack/build-tool.sh hack/helm helm helm.sh/helm/v3/cmd/helm)
kubectl_bin=${KUBECTL:-$(command -v kubectl || true)}
if [ -z "$kubectl_bin" ]; then
  [ -x .cache/tools/k8s/kubectl ] || bash hack/k8s/build.sh >&2
  kubectl_bin=$root/.cache/tools/k8s/kubectl
fi
tar=$(bash hack/e2e-image.sh)
export E2E_UPGRADE_IMAGE=vault-csi-driver:e2e-next
next_tar=$(E2E_IMAGE=$E2E_UPGRADE_IMAGE PLATFORMS=linux/amd64 \
  VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)-next" bash hack/e2e-image.sh)

kubeconfig=$(mktemp)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  rc=$?
  if [ "${E2E_KEEP_CLUSTER:-}" = 1 ]; then
    echo "leaving kind cluster $cluster up (kubeconfig: $kubeconfig); delete it with: $kind delete cluster --name $cluster" >&2
  else
    "$kind" delete cluster --name "$cluster" >&2 || true
    rm -f "$kubeconfig"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$kind" create cluster --name "$cluster" --config e2e/kind.yaml --kubeconfig "$kubeconfig" --wait 180s \
  ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} >&2
"$kind" load image-archive "$tar" --name "$cluster" >&2
"$kind" load image-archive "$next_tar" --name "$cluster" >&2
busybox=${E2E_BUSYBOX:-busybox:1.35}
docker image inspect "$busybox" >/dev/null 2>&1 || timeout 300 docker pull "$busybox" >&2
"$kind" load docker-image "$busybox" --name "$cluster" >&2

# The kind network's IPv4 gateway is this host as the node sees it.
gw=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$') \
  || die "no IPv4 gateway on docker network kind"
export KUBECONFIG=$kubeconfig KUBECTL=$kubectl_bin VAULT_BIN=$vault_bin HELM_BIN=$helm_bin
export E2E_VAULT_LISTEN=${E2E_VAULT_LISTEN:-$gw:0}   # :0 = a free port
export E2E_BUSYBOX=$busybox E2E_KUBELET_DIR=/var/lib/kubelet
# kind has kube-proxy: the driver runs in the pod network and uses the in-cluster API address.
export E2E_HOST_NETWORK=false
unset VAULT_ADDR VAULT_TOKEN E2E_NODE_LOCAL E2E_STATE_DIR E2E_KUBERNETES_SERVICE_HOST E2E_KUBERNETES_SERVICE_PORT
set +e
go test -tags e2e -count=1 -timeout 30m ./e2e/ -v "$@"
rc=$?
set -e
exit $rc
