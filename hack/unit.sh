#!/usr/bin/env bash
# hack/unit.sh — `make unit`: every Go test of the driver module, with one
# control plane (etcd + kube-apiserver, hack/cluster/up.sh --control-plane)
# shared by all the packages whose tests need an API server, on free ports
# and in a temp dir of its own, torn down on exit. VCD_REQUIRE_PARTS makes a
# test whose real part is missing fail instead of skip. Arguments go to
# `go test` (after the defaults).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dir=$(mktemp -d /tmp/vcd-unit-kube-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
apiserver_port=$(free_port)
etcd_port=$(free_port)
etcd_peer_port=$(free_port)
# The cluster scripts' settings, for up.sh and down.sh only: the tests that
# bring up clusters of their own pick their own.
cluster() {
  CLUSTER_DIR=$dir APISERVER_PORT=$apiserver_port ETCD_PORT=$etcd_port ETCD_PEER_PORT=$etcd_peer_port \
    bash "hack/cluster/$1" "${@:2}"
}
cleanup() {
  cluster down.sh --purge >/dev/null 2>&1 || echo "hack/unit.sh: control plane teardown failed (see $dir)" >&2
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! up_log=$(cluster up.sh --control-plane 2>&1); then
  echo "$up_log" >&2
  exit 1
fi

VCD_TEST_KUBECONFIG=$dir/kubeconfig VCD_REQUIRE_PARTS=1 go test -count=1 -timeout 30m "$@" ./...
