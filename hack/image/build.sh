#!/usr/bin/env bash
# hack/image/build.sh — builds the image tool (hack/image) and the pause binary
# (hack/image/pause), both static, into .cache/tools/image-<hash of this module's sources>/
# and prints that directory. A warm cache skips the build.
#   "$(bash hack/image/build.sh)/image" --name NAME:TAG --file SRC=DST[:MODE] ... --out X.tar
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/hack/lib-cache.sh"
key=$(cd "$here" && find . -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 cat go.mod go.sum | sha256sum | cut -c1-16)
out="$root/.cache/tools/image-$key"
if [ ! -x "$out/image" ] || [ ! -x "$out/pause" ]; then
  echo "building the image tool and pause into $out" >&2
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp/image" . \
    && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp/pause" ./pause)
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
ln -sfn "image-$key" "$root/.cache/tools/image"
echo "$out"
