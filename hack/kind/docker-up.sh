#!/usr/bin/env bash
# hack/kind/docker-up.sh [--build] — starts the project's own Docker engine for kind:
# Debian's docker.io (installed with apt if missing), dockerd as a background process with
# its own data root (a cache: images survive), exec root, pid file and socket
# unix:///run/vcd-docker.sock, and the runtime wrapper hack/kind/runc-wrapper.sh (this
# host's root lacks CAP_SYS_RESOURCE). Never touches a user's /var/run/docker.sock.
# Before it starts, it saves what the host looks like (hack/kind/hoststate.sh, the
# iptables rules, sysctls) so hack/kind/docker-down.sh can put every change back.
#   --build   no networking at all (--iptables=false --ip-forward=false --bridge=none):
#             enough to build and save images, changes nothing on the host's network.
# Idempotent: a running engine in the wanted mode is kept; a build-mode one is restarted.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/kind/lib.sh"
mode=full
[ "${1:-}" = --build ] && mode=build
kind_stock && kind_die "VCD_KIND_STOCK=1: using your own Docker; nothing to start"
[ "$(id -u)" = 0 ] || kind_die "docker-up.sh must run as root"

if dockerd_running; then
  have=$(cat "$VCD_DOCKER_STATE/mode" 2>/dev/null || echo full)
  if [ "$have" = "$mode" ] || [ "$have" = full ]; then
    exit 0
  fi
  kind_log "restarting our dockerd: $have -> $mode"
  bash "$root/hack/kind/docker-down.sh"
fi

# jq: the runtime wrapper edits OCI specs with it; mmdebstrap: node-image.sh builds the
# node's root file system with it; nft: docker-down.sh deletes the nft
# tables docker made.
apt_ensure dockerd=docker.io nft=nftables jq=jq mmdebstrap=mmdebstrap

# What the host looks like now, for docker-down.sh.
rm -rf "$VCD_DOCKER_STATE" && mkdir -p "$VCD_DOCKER_STATE"
echo "$mode" >"$VCD_DOCKER_STATE/mode"
bash "$root/hack/kind/hoststate.sh" >"$VCD_DOCKER_STATE/before"
for t in iptables ip6tables; do "$t-save" >"$VCD_DOCKER_STATE/$t" 2>/dev/null || true; done
nft list tables >"$VCD_DOCKER_STATE/nft-tables" 2>/dev/null || true
for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding \
  /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
  [ -r "$f" ] && echo "$f $(cat "$f")"
done >"$VCD_DOCKER_STATE/sysctl"
[ -e /lib/modules ] || touch "$VCD_DOCKER_STATE/no-lib-modules"
[ -e /run/docker ] || touch "$VCD_DOCKER_STATE/no-run-docker"

net=()
[ "$mode" = build ] && net=(--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none)
mkdir -p "$VCD_DOCKER_DATA" "$VCD_DOCKER_EXEC"
kind_log "starting dockerd ($mode; data root $VCD_DOCKER_DATA, socket $VCD_DOCKER_SOCK)"
# setsid: its own session, so a Ctrl-C of the caller does not kill it half way;
# docker-down.sh stops it.
setsid dockerd --data-root "$VCD_DOCKER_DATA" --exec-root "$VCD_DOCKER_EXEC" \
  --pidfile "$VCD_DOCKER_PID" -H "unix://$VCD_DOCKER_SOCK" \
  --add-runtime "vcd-runc=$root/hack/kind/runc-wrapper.sh" --default-runtime vcd-runc \
  --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
  "${net[@]}" </dev/null >"$VCD_DOCKER_STATE/dockerd.log" 2>&1 &
for _ in $(seq 120); do
  docker version >/dev/null 2>&1 && { kind_log "dockerd ready"; exit 0; }
  sleep 0.5
done
tail -n 20 "$VCD_DOCKER_STATE/dockerd.log" >&2
kind_die "dockerd did not answer on $VCD_DOCKER_SOCK within 60s (log above)"
