# shellcheck shell=bash disable=SC2154 # $root is set by the script that sources this file
# Sourced by the tool build scripts (needs $root, the repo root).
# Built tools (Vault, Kubernetes, helm, image tool) live in a machine-wide
# cache keyed by each wrapper module's go.sum, and the repo's .cache/tools is
# a link to it: CI runs in a fresh clone, and a warm machine must still skip
# the 10-minute builds. Override with VCD_TOOLS_CACHE.
: "${root:?lib-cache.sh needs root, the repo root}"
tools_cache=${VCD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-csi-driver/tools}
mkdir -p "$tools_cache" "$root/.cache"
if [ ! -L "$root/.cache/tools" ]; then
  if [ -d "$root/.cache/tools" ]; then
    # An older checkout kept tools in the repo: move them to the shared cache.
    find "$root/.cache/tools" -mindepth 1 -maxdepth 1 -exec mv -n -t "$tools_cache" {} + 2>/dev/null || true
    rm -rf "$root/.cache/tools"
  fi
  ln -sfn "$tools_cache" "$root/.cache/tools"
fi
