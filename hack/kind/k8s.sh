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

key=$( (cd "$here" && cat go.mod go.sum cmd/*/main.go && echo "$version") | sha256sum | cut -c1-16)
out="$root/.cache/tools/kind-k8s-$key"
complete() {
  local b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if ! complete; then
  exec 9>"$root/.cache/tools/kind-k8s.lock"
  flock -w 1800 9 || { echo "k8s.sh: timed out waiting for another build" >&2; exit 1; }
  if ! complete; then
    echo "building kubeadm and kube-proxy $version into $out" >&2
    start=$(date +%s)
    tmp="$out.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    vpkg=k8s.io/component-base/version
    ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=35"
    ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
    (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$tmp/" "${bins[@]/#/./cmd/}")
    rm -rf "$out" && mv "$tmp" "$out"
    echo "built kubeadm and kube-proxy in $(( $(date +%s) - start ))s" >&2
  fi
fi
echo "$out"
