#!/usr/bin/env bash
# hack/e2e-image.sh [OUT_DIR] — the image the e2e suite runs: the release image of
# hack/image-index.sh (an OCI image index for linux/amd64 and linux/arm64, with its
# SBOMs), tagged vault-csi-driver:e2e, without a Docker engine. The cluster's containerd
# imports the index and unpacks the node's platform. Prints the tarball's path
# (default .cache/images/vault-csi-driver-e2e.oci.tar).
#   bash hack/cluster/load-image.sh "$(bash hack/e2e-image.sh)"      # local cluster
#   kind load image-archive "$(bash hack/e2e-image.sh)"              # kind
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tag=${E2E_IMAGE:-vault-csi-driver:e2e}
IMAGE_NAME=${tag%:*} IMAGE_TAG=${tag##*:} bash hack/image-index.sh "${1:-$root/.cache/images}"
