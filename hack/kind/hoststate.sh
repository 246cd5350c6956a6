#!/usr/bin/env bash
# hack/kind/hoststate.sh — prints what our Docker engine and kind may change on this host,
# normalized so two snapshots compare with diff: network links, iptables and ip6tables
# rules and policies (no counters), forwarding and bridge-netfilter sysctls, mounts (not
# under /tmp, where other engineers' tests mount tmpfs), and processes of our engine.
# docker-up.sh saves one before it starts dockerd; docker-down.sh diffs against it.
set -uo pipefail
echo "## links"
ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort
for t in iptables ip6tables; do
  echo "## $t"
  "$t-save" 2>/dev/null | sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]$//' | LC_ALL=C sort
done
echo "## nft tables"
nft list tables 2>/dev/null | LC_ALL=C sort
echo "## sysctl"
for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding \
  /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
  [ -r "$f" ] && echo "$f=$(cat "$f")"
done
echo "## mounts"
awk '$2 !~ "^/tmp/" {print $2, $3}' /proc/self/mounts | LC_ALL=C sort
echo "## processes"
# dockerd, its containerd and shims, docker-proxy, and anything started from our roots.
ps -eo comm=,args= | awk '$1 ~ /^(dockerd|containerd|containerd-shim.*|docker-proxy)$/ && /vcd-docker|docker-proxy/' \
  | LC_ALL=C sort
echo "## files"
for f in /run/vcd-docker.sock /run/vcd-docker.pid /run/vcd-docker /var/lib/docker /run/docker /lib/modules; do
  [ -e "$f" ] && echo "$f"
done
exit 0
