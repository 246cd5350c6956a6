#!/usr/bin/env bash
# hack/kind/k8s.sh — builds kubeadm and kube-proxy v1.35.4 (the two Kubernetes binaries a
# kind node needs beyond hack/k8s's) from the wrapper module hack/kind/k8s into
# .cache/tools/kind-k8s-<hash of go.mod, go.sum, cmd sources and version>. A warm cache
# skips the build. Prints the directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/k8s" && pwd)
root=$(cd "$here/../../.." && pwd)
. "$root/hack/lib-cache.sh"
version=v1.35.4
bins=(kubeadm kube-proxy)

. "$root/hack/k8s/lib.sh"
k8s_build "$here" kind-k8s "$version" "${bins[@]}"
