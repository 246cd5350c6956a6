#!/usr/bin/env bash
# hack/k8s/build.sh — builds the pinned Kubernetes binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl) from this wrapper module into
# .cache/tools/k8s-<hash>/ (hash of go.mod, go.sum and the cmd sources) and points the
# symlink .cache/tools/k8s at it. A warm cache skips the build entirely. Prints the
# directory on stdout; progress goes to stderr. A cold build takes ~9 min on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/hack/lib-cache.sh"
version=v1.35.4
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

. "$root/hack/k8s/lib.sh"
out=$(k8s_build "$here" k8s "$version" "${bins[@]}")
ln -sfn "$(basename "$out")" "$root/.cache/tools/k8s"
echo "$out"
