#!/usr/bin/env bash
# build-tool.sh MODULE_DIR NAME [PKG]
# Builds a test-only tool from its own wrapper module under hack/ and caches the
# binary in .cache/tools/<NAME>-<hash of the module's go.sum> (a link to a
# machine-wide cache, see lib-cache.sh), so a warm machine skips the build. Prints the cached binary's path on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/hack/lib-cache.sh"
mod=$1 name=$2 pkg=${3:-.}
key=$(cat "$root/$mod/go.mod" "$root/$mod/go.sum" | sha256sum | cut -c1-16)
out="$root/.cache/tools/$name-$key"
if [ ! -x "$out" ]; then
  mkdir -p "$root/.cache/tools"
  echo "building $name from $mod (cached as $out; the first build can take many minutes)" >&2
  (cd "$root/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
fi
ln -sfn "$(basename "$out")" "$root/.cache/tools/$name"
echo "$out"
