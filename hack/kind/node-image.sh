#!/usr/bin/env bash
# hack/kind/node-image.sh — builds the kind node image for Kubernetes v1.35.4 with no
# registry and no internet, the way kind's own images/base/Dockerfile and
# pkg/build/nodeimage do it, from Debian packages and Go-built binaries (see
# ../shared/notes/kind.md and the README's "### kind"). Prints the image name on stdout.
# Cached: the tag is a hash of every input (this script, hack/kind/node/*, the Debian
# package list, the Kubernetes, kind, crictl and CoreDNS versions and binaries), and
# the image stays in our dockerd's data root; a saved tarball in the tools cache is
# loaded when the data root is fresh. A warm run prints the name and returns.
# Uses our dockerd (hack/kind/docker-up.sh --build: no host networking changes) and
# stops it again if it started it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/kind/lib.sh"
kind_stock && kind_die "VCD_KIND_STOCK=1 uses a stock node image; nothing to build"
[ "$(id -u)" = 0 ] || kind_die "node-image.sh must run as root (mmdebstrap, dockerd)"

CRICTL_VERSION=v1.34.0
COREDNS_VERSION=v1.13.1
ETCD_TAG=3.6.6-0
PAUSE_TAGS=(3.10.1 3.10)   # kubeadm's, and the sandbox image of kind's containerd config
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# kind's base image packages (images/base/Dockerfile), minus fuse-overlayfs, nfs-common
# and open-iscsi (rootless and storage tests only), plus containerd, runc and the CNI
# plugins from Debian instead of kind's own builds.
NODE_PACKAGES=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,e2fsprogs,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins
PROXY_PACKAGES=iptables,conntrack

k8s_dir=$(bash "$root/hack/k8s/build.sh")
kind_k8s_dir=$(bash "$root/hack/kind/k8s.sh")
img_dir=$(bash "$root/hack/image/build.sh")
kind_bin >/dev/null   # also brings kind's sources (images/base) into the module cache
crictl=$(go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION")
coredns=$(go_tool coredns github.com/coredns/coredns "$COREDNS_VERSION")
kind_src=$(cd "$root/hack/kind/k8s" && go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION
[ -d "$kind_src/images/base/files" ] || GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kind@$KIND_VERSION"
[ -d "$kind_src/images/base/files" ] || kind_die "kind sources missing at $kind_src"

key=$( {
  cat "$0" "$root/hack/kind/node/"*
  echo "$K8S_VERSION $KIND_VERSION $CRICTL_VERSION $COREDNS_VERSION $ETCD_TAG ${PAUSE_TAGS[*]}"
  echo "$DEBIAN_SUITE $DEBIAN_MIRROR $NODE_PACKAGES $PROXY_PACKAGES"
  basename "$k8s_dir"; basename "$kind_k8s_dir"; basename "$img_dir"
} | sha256sum | cut -c1-16)
image=vcd-kind-node:$key
tarball=$root/.cache/tools/kind-node-$key.tar

started=""
# shellcheck disable=SC2317 # called by the EXIT trap
finish() {
  rc=$?
  [ -n "${work:-}" ] && rm -rf "$work"
  [ -n "${build_ctr:-}" ] && docker rm -f -v "$build_ctr" >/dev/null 2>&1
  [ -n "$started" ] && bash "$root/hack/kind/docker-down.sh"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
if ! dockerd_running; then
  started=1
  bash "$root/hack/kind/docker-up.sh" --build
fi

if docker image inspect "$image" >/dev/null 2>&1; then
  kind_log "node image $image is cached in the data root"
  echo "$image"; exit 0
fi
if [ -s "$tarball" ]; then
  kind_log "loading the cached node image $tarball"
  docker load -i "$tarball" >&2
  echo "$image"; exit 0
fi

t0=$(date +%s)
kind_log "building node image $image (cold; Debian packages via $DEBIAN_MIRROR)"
work=$(mktemp -d "$root/.cache/tools/kind-node-build.XXXXXX")
rootfs=$work/rootfs images=$work/images
mkdir -p "$images"
apt_opts=(--variant=minbase --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*')

# 1. The node's root file system: Debian + kind's base files + the Kubernetes binaries.
mmdebstrap "${apt_opts[@]}" --include="$NODE_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >&2
base=$kind_src/images/base/files
install -m 0755 "$base"/usr/local/bin/* "$rootfs/usr/local/bin/"
mkdir -p "$rootfs/kind/bin" "$rootfs/kind/manifests" "$rootfs/LICENSES" "$rootfs/etc/kubernetes/manifests"
install -m 0644 "$base/kind/README.txt" "$rootfs/kind/"
install -m 0755 "$base"/kind/bin/* "$rootfs/kind/bin/"
install -m 0644 "$base/LICENSES/README.txt" "$rootfs/LICENSES/"
install -m 0644 "$base/etc/crictl.yaml" "$rootfs/etc/"
install -m 0644 -D "$base/etc/containerd/config.toml" "$rootfs/etc/containerd/config.toml"
install -m 0644 -D "$base/etc/default/kubelet" "$rootfs/etc/default/kubelet"
install -m 0644 "$base"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
mkdir -p "$rootfs/etc/systemd/system/kubelet.service.d"
for u in containerd.service kubelet.service kubelet.slice undo-mount-hacks.service; do
  install -m 0644 "$base/etc/systemd/system/$u" "$rootfs/etc/systemd/system/"
done
install -m 0644 "$base"/etc/systemd/system/kubelet.service.d/* "$rootfs/etc/systemd/system/kubelet.service.d/"
# This host's root lacks CAP_SYS_RESOURCE, and so does the node: runc cannot set
# oom_score_adj, so containerd must not ask it to.
sed -i 's/^\(\s*restrict_oom_score_adj\s*=\s*\).*/\1true/' "$rootfs/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$rootfs/etc/containerd/config.toml" || kind_die "containerd config: restrict_oom_score_adj not set"
# kind's units expect containerd in /usr/local/bin and the CNI plugins in /opt/cni/bin.
ln -sf /usr/bin/containerd "$rootfs/usr/local/bin/containerd"
mkdir -p "$rootfs/opt/cni" && ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"
install -m 0644 -D "$root/hack/kind/node/10-kind-bridge.conflist" "$rootfs/etc/cni/net.d/10-kind-bridge.conflist"
install -m 0644 "$root/hack/kind/node/default-cni.yaml" "$root/hack/kind/node/default-storage.yaml" "$rootfs/kind/manifests/"
install -m 0755 "$crictl" "$rootfs/usr/local/bin/crictl"
for b in kubelet kubectl; do install -m 0755 "$k8s_dir/$b" "$rootfs/usr/bin/$b"; done
install -m 0755 "$kind_k8s_dir/kubeadm" "$rootfs/usr/bin/kubeadm"
printf '%s' "$K8S_VERSION" >"$rootfs/kind/version"
# What kind's Dockerfile does after installing packages.
rm -f "$rootfs"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \
  "$rootfs"/lib/systemd/system/multi-user.target.wants/* "$rootfs"/etc/systemd/system/*.wants/* \
  "$rootfs"/lib/systemd/system/local-fs.target.wants/* "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* "$rootfs"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$rootfs/sbin/init"
mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
for u in kubelet.service containerd.service undo-mount-hacks.service; do
  ln -sf "/etc/systemd/system/$u" "$rootfs/etc/systemd/system/multi-user.target.wants/$u"
done
ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-binfmt.service"
# containerd's base runtime spec, as kind makes it: the default spec plus kind's
# product-uuid hook, without rlimits.
chroot "$rootfs" ctr oci spec \
  | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
  | jq 'del(.process.rlimits)' >"$rootfs/etc/containerd/cri-base.json"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log
tar -C "$rootfs" --numeric-owner -cf - . | docker import \
  --change 'ENV container=docker' --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  - "vcd-kind-node-base:$key" >&2
rm -rf "$rootfs"
kind_log "node root file system imported ($(( $(date +%s) - t0 ))s)"

# 2. The images kubeadm needs, named as `kubeadm config images list` prints them.
reg=registry.k8s.io
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  "$img_dir/image" --name "$reg/$c:$K8S_VERSION" --file "$k8s_dir/$c=/usr/local/bin/$c:0755" \
    --env PATH=/usr/local/bin:/usr/bin:/bin --entrypoint "/usr/local/bin/$c" --out "$images/$c.tar" >&2
done
"$img_dir/image" --name "$reg/etcd:$ETCD_TAG" --file "$k8s_dir/etcd=/usr/local/bin/etcd:0755" \
  --env PATH=/usr/local/bin:/usr/bin:/bin --dir /var/lib/etcd:0700 --dir /tmp:1777 \
  --entrypoint /usr/local/bin/etcd --out "$images/etcd.tar" >&2
"$img_dir/image" --name "$reg/coredns/coredns:$COREDNS_VERSION" --file "$coredns=/coredns:0755" \
  --entrypoint /coredns --out "$images/coredns.tar" >&2
pause_names=()
for t in "${PAUSE_TAGS[@]}"; do pause_names+=(--name "$reg/pause:$t"); done
"$img_dir/image" "${pause_names[@]}" --file "$img_dir/pause=/pause:0755" --entrypoint /pause --out "$images/pause.tar" >&2
# kube-proxy runs iptables: a Debian minbase with iptables and conntrack.
# shellcheck disable=SC2016 # $1 is mmdebstrap's, expanded by the hook
mmdebstrap "${apt_opts[@]}" --include="$PROXY_PACKAGES" \
  --customize-hook="copy-in $kind_k8s_dir/kube-proxy /usr/local/bin" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$DEBIAN_SUITE" "$work/kube-proxy-rootfs.tar" "$DEBIAN_MIRROR" >&2
docker import --change 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]' "$work/kube-proxy-rootfs.tar" "$reg/kube-proxy:$K8S_VERSION" >&2
docker save -o "$images/kube-proxy.tar" "$reg/kube-proxy:$K8S_VERSION"
docker rmi "$reg/kube-proxy:$K8S_VERSION" >/dev/null
rm -f "$work/kube-proxy-rootfs.tar"
kind_log "component images built ($(( $(date +%s) - t0 ))s)"

# 3. Preload them into the node's containerd (pinned, like kind), then commit.
build_ctr=vcd-kind-build-$key
docker run -d --name "$build_ctr" --entrypoint sleep --security-opt seccomp=unconfined \
  --network none "vcd-kind-node-base:$key" infinity >/dev/null
docker exec "$build_ctr" bash -c 'nohup containerd >/dev/null 2>&1 &'
docker exec "$build_ctr" bash -c 'for i in $(seq 60); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1' \
  || kind_die "containerd in the build container did not start"
for f in "$images"/*.tar; do
  docker exec -i "$build_ctr" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - <"$f" >&2
done
docker exec "$build_ctr" ctr --namespace=k8s.io images list -q >&2
docker exec "$build_ctr" pkill containerd
# Its parent is `sleep`, which reaps nothing: a zombie counts as stopped.
docker exec "$build_ctr" bash -c 'for i in $(seq 40); do ps -C containerd -o stat= | grep -qv "^Z" || exit 0; sleep 0.5; done; exit 1'
docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "$build_ctr" "$image" >/dev/null
docker rm -f -v "$build_ctr" >/dev/null; build_ctr=""
docker rmi "vcd-kind-node-base:$key" >/dev/null
# Older node images of ours: the key changed, they are dead weight.
docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^vcd-kind-node(-base)?:' | grep -vx "$image" | xargs -r docker rmi >/dev/null 2>&1 || true
find "$root/.cache/tools/" -maxdepth 1 -name 'kind-node-*.tar' ! -name "kind-node-$key.tar" -delete
docker save -o "$tarball.tmp" "$image" && mv "$tarball.tmp" "$tarball"
kind_log "node image $image built in $(( $(date +%s) - t0 ))s; saved as $tarball ($(du -h "$tarball" | cut -f1))"
echo "$image"
