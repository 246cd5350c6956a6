#!/usr/bin/env bash
# hack/image-index.sh [OUT_DIR] — the driver's image without Docker, for every platform
# it ships on: static binaries for linux/amd64 and linux/arm64 (Go cross-compiles), an
# OCI image layout tarball holding one image index with both (hack/image), the OCI
# annotations (source, version, revision, licenses, ...) on the index and each image and
# as labels in each config, and beside it a CycloneDX SBOM of each binary's modules
# (cyclonedx-gomod, hack/cyclonedx). Prints the tarball's path.
#   OUT_DIR          default .cache/images
#   IMAGE_NAME       default vault-csi-driver;  IMAGE_TAG  default the version
#   VERSION          default git describe;      IMAGE_SOURCE  default the origin remote,
#                    else the Go module path (set it for a release)
#   PLATFORMS        default "linux/amd64 linux/arm64"
# The tarball loads with `ctr -n k8s.io images import` (hack/cluster/load-image.sh) and
# `kind load image-archive`; a registry takes it with e.g. `crane push` or `skopeo copy
# oci-archive:`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out_dir=${1:-$root/.cache/images}
name=${IMAGE_NAME:-vault-csi-driver}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
tag=${IMAGE_TAG:-$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=${IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null || echo vaultcsi.dev/driver)}
read -r -a platforms <<<"${PLATFORMS:-linux/amd64 linux/arm64}"
created=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z) # reproducible: the commit's time
mkdir -p "$out_dir"

tools=$(bash hack/image/build.sh)
cdx=$(bash hack/build-tool.sh hack/cyclonedx cyclonedx-gomod github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod)
args=(--name "$name:$tag" --entrypoint /vault-csi-driver
  --file "bin/{os}-{arch}/vault-csi-driver=/vault-csi-driver:0755")
for p in "${platforms[@]}"; do
  os=${p%/*} arch=${p#*/}
  args+=(--platform "$p")
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$version" \
    -o "bin/$os-$arch/vault-csi-driver" ./cmd/vault-csi-driver
  "$cdx" bin -json -version "$version" -output "$out_dir/$name-$tag.$os-$arch.cdx.json" \
    "bin/$os-$arch/vault-csi-driver" >&2
done
# distroless/static ships CA certificates; so does this image (Vault over TLS with a public CA).
[ -f /etc/ssl/certs/ca-certificates.crt ] &&
  args+=(--file "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt:0644")
for kv in \
  "org.opencontainers.image.title=vault-csi-driver" \
  "org.opencontainers.image.description=CSI node plugin (vault.csi.dev) that mounts HashiCorp Vault secrets into pods as tmpfs volumes" \
  "org.opencontainers.image.source=$source_url" \
  "org.opencontainers.image.version=$version" \
  "org.opencontainers.image.revision=$revision" \
  "org.opencontainers.image.licenses=Apache-2.0" \
  "org.opencontainers.image.created=$created"; do
  args+=(--annotation "$kv" --label "$kv")
done
out=$out_dir/$name-$tag.oci.tar
"$tools/image" "${args[@]}" --oci "$out" >&2
echo "$out"
