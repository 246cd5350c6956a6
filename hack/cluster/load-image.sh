#!/usr/bin/env bash
# hack/cluster/load-image.sh IMAGE.tar... — imports docker-archive/OCI tarballs (e.g. made
# with hack/image) into the local cluster's containerd (namespace k8s.io), so pods can use
# them with imagePullPolicy: Never or IfNotPresent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ $# -gt 0 ] || die "usage: $0 IMAGE.tar..."
[ -S "$CTR_SOCK" ] || die "no containerd socket at $CTR_SOCK; run hack/cluster/up.sh first"
for t in "$@"; do
  timeout 120 ctr -a "$CTR_SOCK" -n k8s.io images import "$t"
done
