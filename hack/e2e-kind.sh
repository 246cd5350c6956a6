#!/usr/bin/env bash
# hack/e2e-kind.sh [go test flags...] — the body of `make e2e-kind`: the same e2e suite
# (e2e/, build tag e2e) as `make e2e`, on a kind cluster. Vault runs INSIDE the cluster as
# a pod (dev mode; a scratch image with the cached Vault binary), the driver image is the
# project's own (hack/e2e-image.sh), both loaded with `kind load image-archive`; the chart
# is installed with helm by the suite. ALWAYS deletes the cluster and stops our dockerd
# on exit, and checks that the host is as it was (hack/kind/docker-down.sh).
# The cluster must not run beside the local cluster (hack/cluster): take the lock,
#   flock /tmp/vcd-cluster.lock make e2e-kind
# Default (this machine, CI): our own dockerd (hack/kind/docker-up.sh) and a node image
# built here from Debian packages and Go-built binaries (hack/kind/node-image.sh).
#   VCD_KIND_STOCK=1 bash hack/e2e-kind.sh   # your own Docker and a stock kindest/node image
#   KIND_NODE_IMAGE=kindest/node:v1.35.x     # (stock mode) which node image
#   E2E_KEEP_CLUSTER=1                       # leave cluster and dockerd up (debugging)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. hack/kind/lib.sh
t0=$(date +%s)
step() { echo "[e2e-kind $(( $(date +%s) - t0 ))s] $*" >&2; }

if kind_stock; then
  command -v docker >/dev/null 2>&1 || kind_die "VCD_KIND_STOCK=1 needs a docker CLI and engine"
  timeout 15 docker info >/dev/null 2>&1 || kind_die "VCD_KIND_STOCK=1: no Docker engine answers (docker info)"
else
  [ "$(id -u)" = 0 ] || kind_die "hack/e2e-kind.sh must run as root (our dockerd), or use VCD_KIND_STOCK=1 with your own Docker"
fi

step "tools: kind, Vault, helm, kubectl (cached in .cache/tools)"
kind=$(kind_bin)
vault_bin=$(bash hack/build-tool.sh hack/vault vault)
helm_bin=$(bash hack/build-tool.sh hack/helm helm helm.sh/helm/v3/cmd/helm)
kubectl_bin=$(bash hack/k8s/build.sh)/kubectl
img_tool=$(bash hack/image/build.sh)/image

step "images: driver, next driver (scenario 10), Vault, busybox"
tar=$(bash hack/e2e-image.sh)
export E2E_UPGRADE_IMAGE=vault-csi-driver:e2e-next
next_tar=$(E2E_IMAGE=$E2E_UPGRADE_IMAGE PLATFORMS=linux/amd64 \
  VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)-next" bash hack/e2e-image.sh)
mkdir -p .cache/images
vault_image=vcd-vault:e2e
"$img_tool" --name "$vault_image" --file "$vault_bin=/bin/vault:0755" --dir /tmp:1777 \
  --entrypoint /bin/vault --out .cache/images/vcd-vault-e2e.tar >&2
busybox=busybox:1.35 busybox_tar=""
bb=$(command -v busybox || true)
if [ -n "$bb" ] && file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
  applets=()
  for a in $("$bb" --list); do [ "$a" = busybox ] || applets+=(--symlink "/bin/$a=busybox"); done
  busybox_tar=.cache/images/busybox-e2e.tar
  "$img_tool" --name "$busybox" --file "$bb=/bin/busybox:0755" "${applets[@]}" --dir /tmp:1777 --dir /root:0700 \
    --cmd sh --out "$busybox_tar" >&2
fi

kubeconfig=$(mktemp)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  rc=$?
  if [ "${E2E_KEEP_CLUSTER:-}" = 1 ]; then
    step "leaving kind cluster $KIND_CLUSTER up (kubeconfig $kubeconfig); remove: bash hack/kind/cluster-down.sh && bash hack/kind/docker-down.sh"
  else
    if kind_stock; then step "deleting the cluster (your Docker stays up)"; else step "deleting the cluster, stopping dockerd, checking the host"; fi
    # A failed teardown fails the run, even when the suite passed.
    bash hack/kind/cluster-down.sh >&2 || { [ "$rc" != 0 ] || rc=1; }
    kind_stock || bash hack/kind/docker-down.sh >&2 || { [ "$rc" != 0 ] || rc=1; }
    rm -f "$kubeconfig"
  fi
  step "done (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if kind_stock; then
  node_image=${KIND_NODE_IMAGE:-}
else
  step "dockerd up"
  bash hack/kind/docker-up.sh >&2
  step "node image (cached; a cold build takes minutes)"
  node_image=$(bash hack/kind/node-image.sh)
fi
step "cluster up"
KIND_NODE_IMAGE=$node_image bash hack/kind/cluster-up.sh "$kubeconfig" >&2
step "loading images into the node"
for t in "$tar" "$next_tar" .cache/images/vcd-vault-e2e.tar ${busybox_tar:+"$busybox_tar"}; do
  "$kind" load image-archive "$t" --name "$KIND_CLUSTER" >&2
done
if [ -z "$busybox_tar" ]; then
  docker image inspect "$busybox" >/dev/null 2>&1 || timeout 300 docker pull "$busybox" >&2
  "$kind" load docker-image "$busybox" --name "$KIND_CLUSTER" >&2
fi

export KUBECONFIG=$kubeconfig KUBECTL=$kubectl_bin VAULT_BIN=$vault_bin HELM_BIN=$helm_bin
export E2E_KIND=1 E2E_VAULT_IMAGE=$vault_image E2E_BUSYBOX=$busybox E2E_KUBELET_DIR=/var/lib/kubelet
# kind has kube-proxy and CoreDNS: the driver runs in the pod network and uses the
# in-cluster API address; pods reach Vault by its Service name.
export E2E_HOST_NETWORK=false
unset VAULT_ADDR VAULT_TOKEN E2E_VAULT_ADDR E2E_VAULT_LISTEN E2E_NODE_LOCAL E2E_STATE_DIR \
  E2E_KUBERNETES_SERVICE_HOST E2E_KUBERNETES_SERVICE_PORT
step "go test -tags e2e ./e2e/ (kind)"
log=$root/.cache/kind/logs/e2e.log
mkdir -p "$(dirname "$log")"
set +e
go test -tags e2e -count=1 -timeout 40m ./e2e/ -v "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# Never silently: every scenario skipped, by name, with its reason. A scenario that
# cannot run on kind says "skipped on kind: <name>: <reason>" (requireLocalCluster);
# any other skip is listed by its "--- SKIP" line.
skipped=$( { grep -oE 'skipped on kind: TestE2E/.*' "$log" | sort -u
  grep -E -- '--- SKIP: TestE2E' "$log" | sed 's/^ *//' | sort -u; } || true)
if [ -n "$skipped" ]; then
  echo "e2e-kind: scenarios SKIPPED on kind:" >&2
  echo "$skipped" >&2
else
  echo "e2e-kind: no scenario skipped" >&2
fi
step "suite finished (exit $rc)"
exit "$rc"
