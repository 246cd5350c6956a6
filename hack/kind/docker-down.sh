#!/usr/bin/env bash
# hack/kind/docker-down.sh — stops the engine hack/kind/docker-up.sh started and puts back
# everything it changed on the host: containers and networks of our engine, dockerd and its
# containerd and shims, mounts under its roots, the links it made (docker0, br-*, veth*),
# the iptables/ip6tables rules and chains it added (DOCKER*), the FORWARD policy it set to
# DROP, the nft tables it created, ip_forward and bridge-netfilter sysctls, /lib/modules if
# kind made it, the socket, pid file and exec root. Then it compares the host with the
# snapshot taken before the start (hack/kind/hoststate.sh) and fails if anything differs.
# Images stay in the data root (a cache). Safe to run when nothing is up.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/kind/lib.sh"
kind_stock && exit 0
state=$VCD_DOCKER_STATE
[ -d "$state" ] || ! dockerd_running || kind_die "dockerd runs but $state is missing: cannot restore the host"
[ -d "$state" ] || exit 0
logs="$root/.cache/kind/logs"
mkdir -p "$logs"

if dockerd_running; then
  pid=$(cat "$VCD_DOCKER_PID")
  ids=$(timeout 30 docker ps -aq 2>/dev/null || true)
  # shellcheck disable=SC2086 # word splitting of container ids is intended
  [ -z "$ids" ] || timeout 120 docker rm -f -v $ids >/dev/null 2>&1 || true
  timeout 30 docker network prune -f >/dev/null 2>&1 || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
fi
cp "$state/dockerd.log" "$logs/dockerd.log" 2>/dev/null || true
# containerd, shims and docker-proxy started by our dockerd (bounded: two rounds). By
# process name and our exec root in the command line, not a broad pattern.
ours() {
  ps -eo pid=,comm=,args= | awk -v r="$VCD_DOCKER_EXEC/" \
    '($2 ~ /^(containerd|containerd-shim.*)$/ && index($0, r)) || $2 == "docker-proxy" {print $1}'
}
for sig in TERM KILL; do
  pids=$(ours)
  [ -z "$pids" ] && break
  # shellcheck disable=SC2086
  kill -"$sig" $pids 2>/dev/null || true
  for _ in $(seq 20); do [ -z "$(ours)" ] && break; sleep 0.5; done
done

# Mounts under our roots, deepest first.
for _ in 1 2 3; do
  mnts=$(awk -v a="$VCD_DOCKER_DATA" -v b="$VCD_DOCKER_EXEC" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r)
  [ -z "$mnts" ] && break
  while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done <<<"$mnts"
done

# Links docker made.
for l in $(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}'); do
  case $l in docker0 | br-* | veth*) ;; *) continue ;; esac
  grep -qx "$l" <(sed -n '/^## links/,/^## /p' "$state/before") || ip link delete "$l" 2>/dev/null || true
done

# iptables and ip6tables: delete the rules and chains that were not there before and put
# the built-in chains' policies back (docker sets FORWARD to DROP).
restore_tables() {
  local t=$1 before=$state/$1 table="" line chain
  local now
  now=$("$t-save" 2>/dev/null) || return 0
  # Rules first (a chain in use cannot be deleted), then chains, then policies.
  while read -r line; do
    case $line in
      \**) table=${line#\*} ;;
      -A\ *)
        sed -n "/^\*$table\$/,/^COMMIT/p" "$before" | grep -qxF -- "$line" \
          || eval "$t -t $table -D ${line#-A }" 2>/dev/null || true ;;
    esac
  done <<<"$now"
  table=""
  while read -r line; do
    case $line in
      \**) table=${line#\*} ;;
      :*)
        chain=${line#:}; chain=${chain%% *}
        local was
        was=$(sed -n "/^\*$table\$/,/^COMMIT/p" "$before" | grep -m1 "^:$chain " || true)
        if [ -z "$was" ]; then
          case $line in
            *" - "*) "$t" -t "$table" -F "$chain" 2>/dev/null; "$t" -t "$table" -X "$chain" 2>/dev/null || true ;;
            *) "$t" -t "$table" -P "$chain" ACCEPT 2>/dev/null || true ;;  # built-in chain of a new table
          esac
        else
          was=${was#:"$chain" }; was=${was%% *}
          [ "$was" = - ] || "$t" -t "$table" -P "$chain" "$was" 2>/dev/null || true
        fi ;;
    esac
  done <<<"$now"
}
restore_tables iptables
restore_tables ip6tables
# nft tables that did not exist before (iptables-nft leaves the empty tables behind).
if command -v nft >/dev/null 2>&1; then
  while read -r kw fam name; do
    [ "$kw" = table ] || continue
    grep -qx "table $fam $name" "$state/nft-tables" 2>/dev/null || nft delete table "$fam" "$name" 2>/dev/null || true
  done < <(nft list tables 2>/dev/null)
fi

# Sysctls, /lib/modules (kind bind-mounts it; docker makes it if missing), our files.
while read -r f v; do echo "$v" >"$f" 2>/dev/null || true; done <"$state/sysctl"
[ -e "$state/no-lib-modules" ] && rmdir /lib/modules 2>/dev/null
rm -rf "$VCD_DOCKER_SOCK" "$VCD_DOCKER_PID" "$VCD_DOCKER_EXEC"
# dockerd makes /run/docker/plugins whatever its exec root.
[ -e "$state/no-run-docker" ] && rm -rf /run/docker

# Proof: the host equals the snapshot taken before dockerd started. A build-mode engine
# (docker-up.sh --build) touches no network and may run while another engineer's local
# cluster comes and goes (no lock needed): compare only what is ours there.
after=$(bash "$root/hack/kind/hoststate.sh")
mode=$(cat "$state/mode" 2>/dev/null || echo full)
ours_only() { if [ "$mode" = build ]; then sed -n '/^## processes/,$p'; else cat; fi; }
if diff -u <(ours_only <"$state/before") <(ours_only <<<"$after") >"$logs/hoststate.diff"; then
  rm -rf "$state"
  if [ "$mode" = build ]; then
    kind_log "dockerd (build mode) stopped; none of its processes or files is left"
  else
    kind_log "dockerd stopped; host state equals the snapshot taken before it started (links, iptables, ip6tables, nft tables, sysctls, mounts, processes, files)"
  fi
else
  cat "$logs/hoststate.diff" >&2
  kind_die "the host differs from before dockerd started (diff above; snapshot kept in $state)"
fi
