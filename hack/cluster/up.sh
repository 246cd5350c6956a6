#!/usr/bin/env bash
# hack/cluster/up.sh — brings up a real single-node Kubernetes v1.35.4 cluster on this
# machine without Docker: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd (own config/state/socket), a local CNI bridge and kubelet, all as plain
# background processes with state under $CLUSTER_DIR (default .cache/cluster).
#
#   bash hack/cluster/up.sh                  # full node; waits for node Ready
#   bash hack/cluster/up.sh --control-plane  # only etcd + kube-apiserver (envtest-style)
#
# Idempotent: components already running are left alone; when everything is up it says so.
# Stop with hack/cluster/down.sh. Must run as root. See hack/cluster/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=full
for a in "$@"; do
  case $a in
    --control-plane) MODE=control-plane ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $a (try --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root"

T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }
STARTED=0

# ---------------------------------------------------------------- packages (Debian apt)
ensure_packages() {
  local -a need=()
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  command -v flock >/dev/null || need+=(util-linux)
  if [ "$MODE" = full ]; then
    command -v containerd >/dev/null && command -v ctr >/dev/null || need+=(containerd)
    command -v runc >/dev/null || need+=(runc)
    [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
      || need+=(containernetworking-plugins)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
    command -v ip >/dev/null || need+=(iproute2)
  fi
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing with apt: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need[@]}" >"$LOGS/apt.log" 2>&1; then
    apt-get update >>"$LOGS/apt.log" 2>&1
    apt-get install -y --no-install-recommends "${need[@]}" >>"$LOGS/apt.log" 2>&1 \
      || die "apt-get install ${need[*]} failed, see $LOGS/apt.log"
  fi
}

# ---------------------------------------------------------------- certificates
PKI=$CLUSTER_DIR/pki
ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME SUBJECT EXTENDED_KEY_USAGE [SANS] — a leaf certificate signed by the cluster CA.
cert() {
  local name=$1 subj=$2 eku=$3 sans=${4:-}
  [ -s "$PKI/$name.crt" ] && return 0
  ec_key "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 365 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  if [ ! -s "$PKI/ca.crt" ]; then
    ec_key "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=vaultcsi-e2e-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_FIRST_IP"
  cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert scheduler "/CN=system:kube-scheduler" clientAuth
  cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert kubelet-server "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1"
  if [ ! -s "$PKI/sa.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
}

# kubeconfig FILE USER CERTNAME
kubeconfig() {
  local file=$1 user=$2 c=$3
  [ -s "$file" ] && return 0
  umask 077
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vaultcsi-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$c.crt")
    client-key-data: $(base64 -w0 "$PKI/$c.key")
contexts:
- name: vaultcsi-e2e
  context:
    cluster: vaultcsi-e2e
    user: $user
current-context: vaultcsi-e2e
EOF
  umask 022
}

# ---------------------------------------------------------------- processes
# start NAME CMD... — runs CMD in its own session, output to logs/NAME.log, pid to pids/NAME.pid.
start() {
  local name=$1; shift
  if pid_of "$name" >/dev/null; then
    log "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  log "starting $name"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
  STARTED=$((STARTED + 1))
}

# alive NAME — fails (showing the log tail) when NAME has exited.
alive() {
  pid_of "$1" >/dev/null && return 0
  log "$1 exited; last lines of $LOGS/$1.log:"
  tail -n 25 "$LOGS/$1.log" >&2 || true
  return 1
}

# await SECONDS NAME WHAT CMD... — wait for CMD, failing early if process NAME died.
await() {
  local timeout=$1 name=$2 what=$3; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || die "$name died while waiting for $what"
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 25 "$LOGS/$name.log" >&2 || true
      die "timed out after ${timeout}s waiting for $what (log: $LOGS/$name.log)"
    fi
    sleep 0.25
  done
  log "$what ($(elapsed))"
}

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---------------------------------------------------------------- control plane
start_etcd() {
  mkdir -p "$CLUSTER_DIR/etcd" && chmod 700 "$CLUSTER_DIR/etcd"
  start etcd "$K8S_BIN/etcd" --name=e2e --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="e2e=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls="" \
    --unsafe-no-fsync=true --log-level=warn
  await 30 etcd "etcd healthy" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  local issuer=${SA_ISSUER:-https://127.0.0.1:$APISERVER_PORT}
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer="$issuer" \
    --service-account-jwks-uri="$issuer/openid/v1/jwks" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname,InternalIP \
    --profiling=false --v=1
  await 90 kube-apiserver "kube-apiserver ready" kubectl get --raw /readyz
  # Let anyone (e.g. Vault's jwt auth) read the service-account issuer discovery documents
  # (/.well-known/openid-configuration and /openid/v1/jwks).
  if ! kubectl get clusterrolebinding vaultcsi-e2e-issuer-discovery >/dev/null 2>&1; then
    kubectl create clusterrolebinding vaultcsi-e2e-issuer-discovery \
      --clusterrole=system:service-account-issuer-discovery --group=system:unauthenticated >/dev/null
  fi
}

start_controllers() {
  kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
  local kc=$CLUSTER_DIR/controller-manager.kubeconfig ks=$CLUSTER_DIR/scheduler.kubeconfig
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --allocate-node-cidrs=false --node-monitor-period=1s --profiling=false --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$ks" --authentication-kubeconfig="$ks" --authorization-kubeconfig="$ks" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false \
    --profiling=false --v=1
}

# ---------------------------------------------------------------- node
build_images() {
  local tools bb applets=() a
  tools=$(bash "$ROOT/hack/image/build.sh")
  mkdir -p "$CLUSTER_DIR/images"
  if [ ! -s "$CLUSTER_DIR/images/pause.tar" ]; then
    "$tools/image" --name "$PAUSE_IMAGE" --file "$tools/pause=/pause:0755" \
      --entrypoint /pause --out "$CLUSTER_DIR/images/pause.tar" 2>>"$LOGS/images.log"
  fi
  if [ ! -s "$CLUSTER_DIR/images/busybox.tar" ]; then
    bb=$(command -v busybox || echo /bin/busybox)
    for a in $("$bb" --list); do
      [ "$a" = busybox ] || applets+=(--symlink "/bin/$a=busybox")
    done
    "$tools/image" --name busybox:1.35 --name busybox:latest \
      --file "$bb=/bin/busybox:0755" "${applets[@]}" --dir /tmp:1777 --dir /root:0700 \
      --cmd sh --out "$CLUSTER_DIR/images/busybox.tar" 2>>"$LOGS/images.log"
  fi
}

start_containerd() {
  local d=$CLUSTER_DIR/containerd
  mkdir -p "$d/root" "$d/state" "$d/runc" "$CLUSTER_DIR/cni/net.d" "$CLUSTER_DIR/cni/ipam"
  [ -d /run/containerd ] && [ ! -e "$CLUSTER_DIR/run-containerd-existed" ] && [ ! -S "$CTR_SOCK" ] \
    && touch "$CLUSTER_DIR/run-containerd-existed"
  cat >"$d/config.toml" <<EOF
# containerd for the vaultcsi e2e cluster (generated by hack/cluster/up.sh)
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_DIR/cni/net.d"
    max_conf_num = 1
EOF
  # Pod network: the bridge and its address are made here (isGateway false), so the CNI
  # plugin never turns on ip_forward and pods get only the on-link subnet route.
  cat >"$CLUSTER_DIR/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "dataDir": "$CLUSTER_DIR/cni/ipam"
      }
    }
  ]
}
EOF
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$POD_GATEWAY/${POD_SUBNET#*/}" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  start containerd containerd --config "$d/config.toml" --log-level info
  await 30 containerd "containerd ready" ctr --address "$CTR_SOCK" version
  local img
  for img in pause busybox; do
    if ! ctr -a "$CTR_SOCK" -n k8s.io images import "$CLUSTER_DIR/images/$img.tar" >>"$LOGS/images.log" 2>&1; then
      tail -n 5 "$LOGS/images.log" >&2
      die "importing $img failed"
    fi
  done
  log "images imported ($(elapsed))"
}

start_kubelet() {
  mkdir -p "$KUBELET_DIR" "$CLUSTER_DIR/pod-logs"
  # A driver pod with mountPropagation: Bidirectional needs the kubelet dir to be shared;
  # / is private here, so make the dir a shared mount of its own.
  if ! mountpoint -q "$KUBELET_DIR"; then
    mount --bind "$KUBELET_DIR" "$KUBELET_DIR"
  fi
  mount --make-rshared "$KUBELET_DIR"
  echo "$KUBELET_DIR" >"$CLUSTER_DIR/kubelet-dir"
  kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
  cat >"$CLUSTER_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTR_SOCK
imageServiceEndpoint: unix://$CTR_SOCK
podLogsDir: $CLUSTER_DIR/pod-logs
syncFrequency: 10s
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# The images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Leave the host's iptables alone (no KUBE-FIREWALL / canary chains); nothing here needs them.
makeIPTablesUtilChains: false
rotateCertificates: false
serverTLSBootstrap: false
EOF
  start kubelet "$K8S_BIN/kubelet" --config="$CLUSTER_DIR/kubelet-config.yaml" \
    --kubeconfig="$CLUSTER_DIR/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" \
    --cert-dir="$PKI/kubelet" --hostname-override="$NODE_NAME" --v=2
  await 60 kubelet "kubelet healthy" curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
  await 60 kubelet "node $NODE_NAME registered" kubectl get node "$NODE_NAME"
  await 90 kubelet "node $NODE_NAME Ready" node_ready
  await 60 kube-controller-manager "not-ready taint removed" node_untainted
  await 60 kube-controller-manager "default service account" kubectl -n default get serviceaccount default
  await 60 kube-controller-manager "kube-root-ca.crt published" kubectl -n default get configmap kube-root-ca.crt
}

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
node_untainted() {
  [ -z "$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.taints}')" ]
}

# ---------------------------------------------------------------- main
trap '[ $? -eq 0 ] || log "bring-up failed; logs in $LOGS; clean up with: bash hack/cluster/down.sh"' EXIT
mkdir -p "$CLUSTER_DIR" "$LOGS" "$PIDS"
touch "$MARKER"
ensure_packages
K8S_BIN=$(bash "$ROOT/hack/k8s/build.sh")
T0=$(date +%s%N) # bring-up time excludes the one-time build
make_pki
kubeconfig "$KUBECONFIG_ADMIN" kubernetes-admin admin

start_etcd
start_apiserver
if [ "$MODE" = full ]; then
  build_images
  start_controllers
  start_containerd
  start_kubelet
  await 30 kube-scheduler "scheduler healthy" curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  await 30 kube-controller-manager "controller-manager healthy" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
fi
echo "$MODE" >"$CLUSTER_DIR/mode"

if [ "$STARTED" -eq 0 ]; then
  log "cluster already up ($MODE); nothing started"
else
  log "cluster up ($MODE) in $(elapsed)"
fi
cat <<EOF
export KUBECONFIG=$KUBECONFIG_ADMIN
kubectl:     $K8S_BIN/kubectl   (also .cache/tools/k8s/kubectl)
server:      https://127.0.0.1:$APISERVER_PORT (CA: $PKI/ca.crt)
EOF
if [ "$MODE" = full ]; then
  cat <<EOF
kubelet dir: $KUBELET_DIR   (also in $CLUSTER_DIR/kubelet-dir)
node:        $NODE_NAME
containerd:  $CTR_SOCK   (images: ctr -a $CTR_SOCK -n k8s.io images import X.tar)
EOF
fi
