#!/usr/bin/env bash
# hack/kind/runc-wrapper.sh — the OCI runtime our dockerd uses (--default-runtime): runc,
# minus CAP_SYS_RESOURCE. Root on this host lacks that capability, so every privileged
# container (kind nodes are privileged) fails with "unable to apply caps: operation not
# permitted". On `create` drop it from the bundle's config.json, on `exec` from the
# process spec (kind runs `docker exec --privileged`), then exec the real runc.
set -euo pipefail
runc=${VCD_RUNC:-/usr/sbin/runc}
cmd="" bundle="" process=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[i]}
  case $a in
    create | run | exec) [ -z "$cmd" ] && cmd=$a ;;
    --bundle | -b) bundle=${args[i + 1]:-} ;;
    --bundle=*) bundle=${a#--bundle=} ;;
    --process | -p) process=${args[i + 1]:-} ;;
    --process=*) process=${a#--process=} ;;
  esac
done
# strip FILE JQPATH: remove CAP_SYS_RESOURCE from every capability set under JQPATH.
strip() {
  local f=$1 p=$2 tmp
  [ -f "$f" ] || return 0
  tmp=$(mktemp "$f.XXXXXX")
  jq "if $p then $p |= with_entries(.value |= (if type == \"array\" then map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) else . end" "$f" >"$tmp"
  chmod --reference="$f" "$tmp"
  mv "$tmp" "$f"
}
case $cmd in
  create | run) strip "${bundle:-.}/config.json" .process.capabilities ;;
  exec) [ -n "$process" ] && strip "$process" .capabilities ;;
esac
exec "$runc" "$@"
