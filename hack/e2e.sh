#!/usr/bin/env bash
# hack/e2e.sh [go test flags...] — the body of `make e2e`: the end-to-end suite (e2e/, build
# tag e2e) on the local no-Docker Kubernetes cluster (hack/cluster). Builds (or reuses from
# .cache/tools) Vault and helm, brings the cluster up, builds and loads the driver image,
# runs the suite, and ALWAYS brings the cluster down again; exits with the suite's status.
#   bash hack/e2e.sh                       # everything
#   bash hack/e2e.sh -run 'TestE2E/1-2'    # extra flags go to `go test`
#   E2E_KEEP_CLUSTER=1 bash hack/e2e.sh    # leave the cluster up afterwards (debugging)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || { echo "hack/e2e.sh: must run as root (the cluster's kubelet and mounts need it)" >&2; exit 1; }
t0=$(date +%s)
step() { echo "[e2e $(( $(date +%s) - t0 ))s] $*" >&2; }

CLUSTER_DIR=${CLUSTER_DIR:-$root/.cache/cluster}
state_dir=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  rc=$?
  if [ "${E2E_KEEP_CLUSTER:-}" = 1 ]; then
    step "leaving the cluster up (E2E_KEEP_CLUSTER=1); stop it with hack/cluster/down.sh"
  else
    step "bringing the cluster down"
    bash hack/cluster/down.sh >&2 || echo "hack/e2e.sh: cluster teardown failed" >&2
    # Per-volume state of the driver (tokens): gone with the volumes.
    [ -n "$state_dir" ] && rm -rf "$state_dir"
  fi
  step "done (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "tools: Vault, helm (cached in .cache/tools after the first build)"
vault_bin=$(bash hack/build-tool.sh hack/vault vault)
helm_bin=$(bash hack/build-tool.sh hack/helm helm helm.sh/helm/v3/cmd/helm)
step "cluster up"
bash hack/cluster/up.sh >&2
step "driver image"
tar=$(bash hack/e2e-image.sh)
bash hack/cluster/load-image.sh "$tar" >&2
# Scenario 10 upgrades the release to this one while pods run: the same code
# built as another version (amd64 only: the node's platform).
step "next driver image (the helm upgrade scenario)"
export E2E_UPGRADE_IMAGE=vault-csi-driver:e2e-next
next_tar=$(E2E_IMAGE=$E2E_UPGRADE_IMAGE PLATFORMS=linux/amd64 \
  VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)-next" bash hack/e2e-image.sh)
bash hack/cluster/load-image.sh "$next_tar" >&2

# The driver's state dir must be tmpfs on the node (this machine). /run is tmpfs on
# systemd hosts and in kind nodes; where it is not, use /dev/shm.
if [ "$(stat -f -c %T /run 2>/dev/null)" != tmpfs ]; then
  state_dir=/dev/shm/vault-csi-driver-e2e
  export E2E_STATE_DIR=$state_dir
fi
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
export KUBECTL=$root/.cache/tools/k8s/kubectl
export VAULT_BIN=$vault_bin HELM_BIN=$helm_bin
export E2E_KUBELET_DIR
E2E_KUBELET_DIR=$(cat "$CLUSTER_DIR/kubelet-dir")
# No kube-proxy and no DNS here: the driver (hostNetwork) reaches the API server on
# 127.0.0.1, the pods reach Vault there too.
export E2E_HOST_NETWORK=true E2E_NODE_LOCAL=1
export E2E_KUBERNETES_SERVICE_HOST=127.0.0.1 E2E_KUBERNETES_SERVICE_PORT=${APISERVER_PORT:-6443}
unset VAULT_ADDR VAULT_TOKEN
step "go test -tags e2e ./e2e/"
set +e
go test -tags e2e -count=1 -timeout 30m ./e2e/ -v "$@"
rc=$?
set -e
exit $rc
