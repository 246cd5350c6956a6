#!/usr/bin/env bash
# hack/kind/cluster-up.sh KUBECONFIG — creates the kind cluster $KIND_CLUSTER_NAME
# (default vault-csi-e2e) from e2e/kind.yaml and writes its kubeconfig to KUBECONFIG.
# Node image: KIND_NODE_IMAGE (hack/kind/node-image.sh prints ours; empty with
# VCD_KIND_STOCK=1: kind's default for its version). Docker: ours (hack/kind/docker-up.sh)
# unless VCD_KIND_STOCK=1. A cluster of the same name left by an interrupted run is
# deleted first.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/kind/lib.sh"
kubeconfig=${1:?usage: cluster-up.sh KUBECONFIG}
kind=$(kind_bin)
kind_stock || dockerd_running || kind_die "our dockerd is not running: bash hack/kind/docker-up.sh"
if "$kind" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind_log "deleting a leftover cluster $KIND_CLUSTER"
  "$kind" delete cluster --name "$KIND_CLUSTER" >&2
fi
t0=$(date +%s)
"$kind" create cluster --name "$KIND_CLUSTER" --config "$root/e2e/kind.yaml" --kubeconfig "$kubeconfig" \
  --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} >&2
kind_log "cluster $KIND_CLUSTER up in $(( $(date +%s) - t0 ))s"
