#!/usr/bin/env bash
# hack/kind/cluster-down.sh — deletes the kind cluster $KIND_CLUSTER_NAME (default
# vault-csi-e2e) if it exists. Docker stays up (hack/kind/docker-down.sh stops ours).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/kind/lib.sh"
kind=$(kind_bin)
kind_stock || dockerd_running || exit 0
if timeout 60 "$kind" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  timeout 180 "$kind" delete cluster --name "$KIND_CLUSTER" >&2
fi
