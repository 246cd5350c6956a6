# syntax=docker/dockerfile:1
# vault-csi-driver: a static binary on a distroless base.
#   docker build -t vault-csi-driver:dev \
#     --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg REVISION=$(git rev-parse HEAD) .
# The e2e image (hack/e2e-image.sh) has the same layout without Docker: the
# binary at /vault-csi-driver, which is also the entrypoint.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY driver/ driver/
COPY provider/ provider/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/vault-csi-driver ./cmd/vault-csi-driver

# The driver mounts tmpfs with syscalls (no mount binary) and must run as
# root in a privileged container, so the nonroot variant does not apply.
FROM gcr.io/distroless/static-debian12:latest
ARG VERSION=dev
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="vault-csi-driver" \
      org.opencontainers.image.description="CSI node plugin (vault.csi.dev) that mounts HashiCorp Vault secrets into pods as tmpfs volumes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/vault-csi-driver /vault-csi-driver
ENTRYPOINT ["/vault-csi-driver"]
