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

key=$( (cd "$here" && cat go.mod go.sum cmd/*/main.go && echo "$version") | sha256sum | cut -c1-16)
out="$root/.cache/tools/k8s-$key"

complete() {
  local b
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}

mkdir -p "$root/.cache/tools"
if ! complete; then
  # One build at a time (up.sh may be started twice); wait at most 30 min for the other.
  exec 9>"$root/.cache/tools/k8s.lock"
  flock -w 1800 9 || { echo "build.sh: timed out waiting for another k8s build" >&2; exit 1; }
  if ! complete; then
    echo "building Kubernetes $version binaries into $out (cold: ~9 min on 2 cores)" >&2
    start=$(date +%s)
    tmp="$out.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    vpkg=k8s.io/component-base/version
    ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=35"
    ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
    (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$tmp/" "${bins[@]/#/./cmd/}")
    rm -rf "$out" && mv "$tmp" "$out"
    echo "built Kubernetes binaries in $(( $(date +%s) - start ))s" >&2
  fi
fi
ln -sfn "k8s-$key" "$root/.cache/tools/k8s"
echo "$out"
