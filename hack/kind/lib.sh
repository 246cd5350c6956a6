# shellcheck shell=bash disable=SC2154,SC2034 # $root is set by the script that sources this file
# Sourced by hack/kind/*.sh and hack/e2e-kind.sh (needs $root, the repo root).
# One Docker engine of the project's own: its socket, pid file, exec root and a state dir
# that records what the host looked like before it started, so docker-down.sh can put
# every change back. The data root is a cache (images survive, keyed by tag).
#   VCD_KIND_STOCK=1   use the caller's own Docker (DOCKER_HOST or its default) and stock
#                      kind node images from a registry: no dockerd of ours, no image build.
: "${root:?lib.sh needs root, the repo root}"
. "$root/hack/lib-cache.sh"
export PATH=$PATH:/usr/local/go/bin

KIND_VERSION=v0.33.0
K8S_VERSION=v1.35.4
KIND_CLUSTER=${KIND_CLUSTER_NAME:-vault-csi-e2e}
VCD_DOCKER_SOCK=/run/vcd-docker.sock
VCD_DOCKER_PID=/run/vcd-docker.pid
VCD_DOCKER_EXEC=/run/vcd-docker
VCD_DOCKER_STATE=/run/vcd-docker.state
VCD_DOCKER_DATA=${VCD_DOCKER_DATA:-$(dirname "$tools_cache")/docker}
kind_stock() { [ "${VCD_KIND_STOCK:-}" = 1 ]; }
if ! kind_stock; then
  export DOCKER_HOST=unix://$VCD_DOCKER_SOCK
fi

kind_log() { echo "[kind $(date -u +%H:%M:%S)] $*" >&2; }
kind_die() { echo "hack/kind: $*" >&2; exit 1; }

# dockerd_running: our dockerd (by its pid file) is alive.
dockerd_running() {
  [ -s "$VCD_DOCKER_PID" ] && kill -0 "$(cat "$VCD_DOCKER_PID")" 2>/dev/null
}

# kind_bin prints the path of kind $KIND_VERSION, built once into the tools cache.
kind_bin() {
  local dir="$root/.cache/tools/kind-$KIND_VERSION"
  if [ ! -x "$dir/kind" ]; then
    kind_log "building kind $KIND_VERSION into $dir"
    GOBIN="$dir.tmp" CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "sigs.k8s.io/kind@$KIND_VERSION" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/kind"
}

# go_tool NAME PKG VERSION prints the path of a Go command built once (CGO off) into
# .cache/tools/NAME-VERSION/, e.g. go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl v1.34.0.
go_tool() {
  local name=$1 pkg=$2 ver=$3 dir="$root/.cache/tools/$1-$3"
  if [ ! -x "$dir/$name" ]; then
    kind_log "building $name $ver into $dir"
    rm -rf "$dir.tmp"
    GOBIN="$dir.tmp" CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "$pkg@$ver" >&2
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/$name"
}

# apt_ensure CMD=PACKAGE... installs, from Debian, the packages whose command is missing.
# No service starts (policy-rc.d, put back as it was): our dockerd has its own roots.
apt_ensure() {
  local need=() p
  for p in "$@"; do command -v "${p%%=*}" >/dev/null 2>&1 || need+=("${p#*=}"); done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || kind_die "missing packages: ${need[*]} (run as root to install them)"
  kind_log "apt-get install ${need[*]}"
  local made=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1
  fi
  timeout 600 apt-get update -qq >&2 || true
  local rc=0
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || rc=$?
  [ -n "$made" ] && rm -f /usr/sbin/policy-rc.d
  return "$rc"
}
