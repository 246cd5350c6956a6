#!/usr/bin/env bash
# hack/e2e-image.sh [OUT.tar] — builds bin/vault-csi-driver (static, CGO_ENABLED=0) and a
# docker-archive image tarball vault-csi-driver:e2e with the same layout as the Dockerfile
# (binary at /vault-csi-driver, which is the entrypoint), without a Docker engine.
# Prints the tarball's path (default .cache/images/vault-csi-driver-e2e.tar).
#   bash hack/cluster/load-image.sh "$(bash hack/e2e-image.sh)"      # local cluster
#   kind load image-archive "$(bash hack/e2e-image.sh)"              # kind
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-$root/.cache/images/vault-csi-driver-e2e.tar}
tag=${E2E_IMAGE:-vault-csi-driver:e2e}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
mkdir -p bin "$(dirname "$out")"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" \
  -o bin/vault-csi-driver ./cmd/vault-csi-driver
tools=$(bash hack/image/build.sh)
args=(--name "$tag" --file "bin/vault-csi-driver=/vault-csi-driver:0755"
  --entrypoint /vault-csi-driver
  --label "org.opencontainers.image.title=vault-csi-driver"
  --label "org.opencontainers.image.version=$version")
# distroless/static ships CA certificates; so does this image (Vault over TLS with a public CA).
[ -f /etc/ssl/certs/ca-certificates.crt ] && args+=(--file "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt:0644")
"$tools/image" "${args[@]}" --out "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "$out"
