# hack/cluster/lib.sh — settings and helpers shared by up.sh and down.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cache/cluster}
# Ports (all bound to 127.0.0.1). Override to run beside something that uses the defaults.
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
APISERVER_PORT=${APISERVER_PORT:-6443}
KUBELET_PORT=${KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-10248}
KCM_PORT=${KCM_PORT:-10257}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
# Pod network: a local bridge with a private /24; pods get no default route.
POD_SUBNET=${POD_SUBNET:-10.244.0.0/24}
POD_GATEWAY=${POD_GATEWAY:-10.244.0.1}
BRIDGE=${BRIDGE:-vcsi0}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
SERVICE_FIRST_IP=${SERVICE_FIRST_IP:-10.96.0.1}
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
CNI_NETWORK=vaultcsi-e2e

KUBELET_DIR=$CLUSTER_DIR/kubelet
CTR_SOCK=$CLUSTER_DIR/containerd/containerd.sock
KUBECONFIG_ADMIN=$CLUSTER_DIR/kubeconfig
LOGS=$CLUSTER_DIR/logs
PIDS=$CLUSTER_DIR/pids
MARKER=$CLUSTER_DIR/.vaultcsi-cluster

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for SECONDS WHAT CMD... — polls CMD every 0.25 s until it succeeds or SECONDS pass.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.25
  done
}

# pid_of NAME — the pid recorded for NAME if that process is still alive.
pid_of() {
  local f=$PIDS/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must still be the one we started.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
  echo "$pid"
}

# stop_pid GRACE NAME... — SIGTERM the recorded processes together, SIGKILL those still
# running after GRACE seconds.
stop_pid() {
  local grace=$1 name pid i left; shift
  local -a pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < grace * 4 && ${#pids[@]} > 0; i++)); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ $left = 0 ] && break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in ${grace}s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
  done
  for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# mounts_under DIR — mount points at or below DIR, deepest/newest first.
mounts_under() {
  local dir=$1
  # /proc/self/mountinfo field 5 is the mount point (octal-escaped); list in reverse mount order.
  awk -v d="$dir" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print p }' \
    /proc/self/mountinfo | tac
}
