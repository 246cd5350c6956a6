#!/usr/bin/env bash
# hack/cluster/down.sh — stops the local cluster started by up.sh and removes its traces:
# kubelet first, then every container and containerd with its shims, then the control
# plane; unmounts everything under $CLUSTER_DIR (pod volumes, overlay rootfs, netns, the
# shared kubelet dir), deletes the pod bridge and the kubepods cgroups, then deletes
# $CLUSTER_DIR except logs/ (KEEP_STATE=1 keeps everything; --purge removes logs too).
# Safe to run twice and when nothing is up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PURGE=0
for a in "$@"; do
  case $a in
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown argument $a (try --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root"

# pids_matching STRING — pids whose command line contains STRING (our socket/dir paths).
pids_matching() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$1" && echo "${p#/proc/}"
  done
  return 0
}

# kill_pids SIGNAL PIDS... then wait (bounded) for them to go.
kill_pids() {
  local sig=$1 p i; shift
  [ $# -gt 0 ] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    local left=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ $left = 0 ] && return 0
    sleep 0.25
  done
  return 1
}

# kubepods_pids — every process in the cgroups kubelet created (only pod containers live there).
kubepods_pids() {
  local f
  for f in /sys/fs/cgroup/*/kubepods; do
    [ -d "$f" ] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

if [ ! -d "$CLUSTER_DIR" ]; then
  log "no cluster state at $CLUSTER_DIR"
fi
# Node-wide cleanup (pod processes, kubepods cgroups, the bridge) only for a state dir that
# ran a node, so stopping a --control-plane cluster never touches another cluster's node.
NODE=0
[ -d "$CLUSTER_DIR/containerd" ] && NODE=1

# 1. kubelet first, so it does not restart containers we stop.
[ -d "$PIDS" ] && stop_pid 20 kubelet

# 2. containers: kill every task through containerd, delete them (unmounts rootfs).
if [ -d "$PIDS" ] && pid_of containerd >/dev/null && [ -S "$CTR_SOCK" ]; then
  ctr_() { timeout 20 ctr -a "$CTR_SOCK" -n k8s.io "$@"; }
  tasks=$(ctr_ tasks ls -q 2>/dev/null || true)
  if [ -n "$tasks" ]; then
    log "killing $(echo "$tasks" | wc -l) containers"
    for t in $tasks; do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $tasks; do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
  fi
fi
[ -d "$PIDS" ] && stop_pid 15 containerd

# 3. shims of our containerd (they carry our socket path) and any container left behind.
mapfile -t shims < <(pids_matching "-address $CTR_SOCK")
if [ ${#shims[@]} -gt 0 ]; then
  log "stopping containerd shims: ${shims[*]}"
  kill_pids TERM "${shims[@]}" || kill_pids KILL "${shims[@]}" || log "WARNING: shims still running: ${shims[*]}"
fi
left=()
[ "$NODE" = 1 ] && mapfile -t left < <(kubepods_pids)
if [ ${#left[@]} -gt 0 ]; then
  log "killing leftover pod processes: ${left[*]}"
  kill_pids KILL "${left[@]}" || log "WARNING: pod processes still running: ${left[*]}"
fi

# 4. control plane.
if [ -d "$PIDS" ]; then
  stop_pid 20 kube-scheduler kube-controller-manager kube-apiserver
  stop_pid 15 etcd
fi

# 5. mounts under the state dir, newest first; lazily when busy.
if [ -d "$CLUSTER_DIR" ]; then
  for pass in 1 2 3; do
    mapfile -t mnts < <(mounts_under "$CLUSTER_DIR")
    [ ${#mnts[@]} -eq 0 ] && break
    [ "$pass" = 1 ] && log "unmounting ${#mnts[@]} mounts under $CLUSTER_DIR"
    for m in "${mnts[@]}"; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
  mapfile -t mnts < <(mounts_under "$CLUSTER_DIR")
  [ ${#mnts[@]} -eq 0 ] || log "WARNING: still mounted: ${mnts[*]}"
fi

# 6. network: the pod bridge (veth ends go with their netns) and CNI's result cache.
if [ "$NODE" = 1 ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
  log "deleting bridge $BRIDGE"
  ip link del "$BRIDGE" || true
fi
if [ "$NODE" = 1 ]; then
  # libcni caches ADD results outside our dirs: ours carry our network name, or a sandbox id.
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  for sb in "$CLUSTER_DIR"/containerd/state/io.containerd.grpc.v1.cri/sandboxes/*; do
    [ -e "$sb" ] && rm -f /var/lib/cni/results/*-"$(basename "$sb")"-* 2>/dev/null
  done
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
fi

# 7. cgroups kubelet and runc created (empty now), deepest first.
for f in /sys/fs/cgroup/*/kubepods; do
  if [ "$NODE" != 1 ] || [ ! -d "$f" ]; then continue; fi
  find "$f" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  [ -d "$f" ] && log "WARNING: could not remove cgroup $f"
done

# 8. /run/containerd: the shims' socket dir lives there whatever the config says; remove
#    it if we created it and it is empty.
if [ "$NODE" = 1 ] && [ -d /run/containerd ] && [ ! -e "$CLUSTER_DIR/run-containerd-existed" ]; then
  find /run/containerd -depth -type d -empty -delete 2>/dev/null || true
fi

# 9. state: delete (only a dir up.sh made, and only with nothing mounted in it).
if [ -d "$CLUSTER_DIR" ] && [ "${KEEP_STATE:-0}" != 1 ]; then
  if [ ! -e "$MARKER" ]; then
    log "WARNING: $CLUSTER_DIR has no $(basename "$MARKER") marker; not deleting it"
  elif [ -n "$(mounts_under "$CLUSTER_DIR")" ]; then
    log "WARNING: mounts remain under $CLUSTER_DIR; not deleting it"
  else
    for e in "$CLUSTER_DIR"/* "$CLUSTER_DIR"/.[!.]*; do
      [ -e "$e" ] || continue
      [ "$PURGE" = 0 ] && { [ "$e" = "$LOGS" ] || [ "$e" = "$MARKER" ]; } && continue
      rm -rf --one-file-system "$e"
    done
    if [ "$PURGE" = 1 ]; then rmdir "$CLUSTER_DIR" 2>/dev/null || true; fi
    log "removed cluster state$([ "$PURGE" = 0 ] && echo " (logs kept in $LOGS)")"
  fi
fi
log "cluster down"
