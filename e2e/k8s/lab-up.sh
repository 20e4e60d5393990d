#!/bin/bash
# Bring up a single-node Kubernetes cluster on loopback, without Docker and
# without systemd: containerd + runc, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and a kubelet whose node is named
# $NODE_NAME (default localhost). Everything listens on 127.0.0.1 only and
# keeps its state below $LAB_DIR (default /tmp/rbdcsi-k8s); lab-down.sh
# stops it. About 15 s once the binaries are built (build-tools.sh k8s).
#
# Then: export KUBECONFIG=$LAB_DIR/admin.kubeconfig
#
# There is no kube-proxy: pods that talk to the API server run with
# hostNetwork and KUBERNETES_SERVICE_HOST=127.0.0.1, KUBERNETES_SERVICE_PORT=
# $APISERVER_PORT. Pod IPs come from a bridge CNI network in 127.244.0.0/24
# with no gateway. No image can be pulled: images.sh imports local ones.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=lab-up
MARK=.rbdcsi-k8s-lab

# --- preconditions -------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (containerd, kubelet and mounts need it)"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run e2e/k8s/build-tools.sh k8s"
done
ETCD=${ETCD:-$(command -v etcd || true)}
[ -n "$ETCD" ] || die "etcd missing: run e2e/k8s/install-deps.sh"
for b in containerd ctr runc openssl curl; do
  command -v $b >/dev/null || die "$b missing: run e2e/k8s/install-deps.sh"
done
CNI_BIN=${CNI_BIN:-/usr/lib/cni}
for p in bridge host-local loopback; do
  [ -x "$CNI_BIN/$p" ] || die "CNI plugin $CNI_BIN/$p missing: run e2e/k8s/install-deps.sh"
done
case $LAB_DIR in /*) ;; *) die "LAB_DIR must be absolute" ;; esac
LAB_DIR=${LAB_DIR%/}
[ ${#LAB_DIR} -le 40 ] || die "LAB_DIR is too long (unix socket paths below it must fit in 107 bytes)"

if [ -e "$LAB_DIR/$MARK" ]; then
  for f in "$LAB_DIR"/run/*.pid; do
    [ -e "$f" ] && pid_alive "$(cat "$f")" && die "a lab is running in $LAB_DIR ($(basename "$f" .pid)): run lab-down.sh first"
  done
  "$E2E_K8S_DIR/lab-down.sh" >/dev/null 2>&1 || true
elif [ -d "$LAB_DIR" ] && [ -n "$(ls -A "$LAB_DIR")" ]; then
  die "$LAB_DIR exists, is not empty and was not made by lab-up.sh"
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $ETCD_PORT $((ETCD_PORT + 1)) $((ETCD_PORT + 2)) $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT $KUBELET_PORT $KUBELET_HEALTHZ_PORT; do
  port_busy "$p" && die "127.0.0.1:$p is in use (another lab?); set the *_PORT variables (see lib.sh)"
done

rm -rf "$LAB_DIR"
mkdir -p "$LAB_DIR"/{run,logs,pki,etcd,containerd,cni/net.d,kubelet/manifests,kubelet/volume-plugins,pod-logs}
: >"$LAB_DIR/$MARK"
[ -d /lib/modules ] || { mkdir -p /lib/modules && : >"$LAB_DIR/made-lib-modules"; }
cd "$LAB_DIR"

# on failure: say where the logs are, stop what was started
on_exit() {
  local rc=$?
  [ $rc -eq 0 ] && return
  log "failed; logs in $LAB_DIR/logs; stopping the lab" >&2
  "$E2E_K8S_DIR/lab-down.sh" --keep >/dev/null 2>&1 || true
}
trap on_exit EXIT

# start NAME COMMAND...: run in the background, logs/NAME.log, run/NAME.pid
start() {
  local name=$1
  shift
  nohup "$@" >"logs/$name.log" 2>&1 &
  echo $! >"run/$name.pid"
}

# --- PKI: a CA, the API server's certificate, client certificates -------------
pki() {
  local d=pki
  gen_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$d/$1.key" 2>/dev/null; }
  # sign NAME SUBJECT EXTENSIONS
  sign() {
    gen_key "$1"
    openssl req -new -key "$d/$1.key" -subj "$2" -out "$d/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
  }
  gen_key ca
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=rbdcsi-e2e-ca" -days 30 -out "$d/ca.crt" 2>/dev/null
  sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  # the apiserver's client certificate towards the kubelet (logs, exec)
  sign apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  # the kubelet as a real node identity: the Node authorizer limits it to
  # the Secrets of its own pods' volumes, as in production
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  gen_key sa
  openssl ec -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local kcm_token sched_token
  kcm_token=$(openssl rand -hex 16)
  sched_token=$(openssl rand -hex 16)
  printf '%s,system:kube-controller-manager,uid-kcm,"system:masters"\n%s,system:kube-scheduler,uid-sched,"system:masters"\n' \
    "$kcm_token" "$sched_token" >"$d/tokens.csv"
  chmod 600 "$d"/*.key "$d/tokens.csv"
  kubeconfig admin "client-certificate: $LAB_DIR/pki/admin.crt
    client-key: $LAB_DIR/pki/admin.key"
  kubeconfig kubelet "client-certificate: $LAB_DIR/pki/kubelet.crt
    client-key: $LAB_DIR/pki/kubelet.key"
  kubeconfig kcm "token: $kcm_token"
  kubeconfig scheduler "token: $sched_token"
}

# kubeconfig NAME USER_FIELDS: $LAB_DIR/NAME.kubeconfig
kubeconfig() {
  cat >"$LAB_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $LAB_DIR/pki/ca.crt
users:
- name: $1
  user:
    $2
contexts:
- name: lab
  context: {cluster: lab, user: $1}
current-context: lab
EOF
  chmod 600 "$LAB_DIR/$1.kubeconfig"
}

pki
log "certificates and kubeconfigs written"

# --- containerd ------------------------------------------------------------------
cat >containerd/config.toml <<EOF
version = 2
root = "$LAB_DIR/containerd/root"
state = "$LAB_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$LAB_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # no CAP_SYS_RESOURCE in this environment: never lower oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$LAB_DIR/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$LAB_DIR/cni/net.d"
EOF
# pods get 127.244.0.x on a bridge with no gateway: reachable from this host only
cat >cni/net.d/10-rbdcsi-e2e.conflist <<EOF
{"cniVersion": "0.4.0", "name": "rbdcsi-e2e", "plugins": [
  {"type": "bridge", "bridge": "rbdcsi-e2e0", "isGateway": false, "isDefaultGateway": false,
   "ipMasq": false, "hairpinMode": false,
   "ipam": {"type": "host-local", "dataDir": "$LAB_DIR/cni/ipam",
            "ranges": [[{"subnet": "127.244.0.0/24", "rangeStart": "127.244.0.10", "rangeEnd": "127.244.0.250"}]]}},
  {"type": "loopback"}
]}
EOF
start containerd containerd --config containerd/config.toml
wait_until 30 containerd ctr -a "$CONTAINERD_SOCK" version
log "containerd up"

# --- images: from the archives images.sh made --------------------------------------
if compgen -G "$IMAGE_DIR/*.tar" >/dev/null; then
  "$E2E_K8S_DIR/images.sh" import
else
  log "no image archives in $IMAGE_DIR yet (images.sh build): pods cannot start until they are imported"
fi

# --- etcd ---------------------------------------------------------------------------
start etcd "$ETCD" --name lab --data-dir "$LAB_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "lab=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))" \
  --quota-backend-bytes=1073741824
wait_until 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
log "etcd healthy"

# --- control plane -----------------------------------------------------------------------
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
  --endpoint-reconciler-type=none \
  --tls-cert-file=pki/apiserver.crt --tls-private-key-file=pki/apiserver.key \
  --client-ca-file=pki/ca.crt --token-auth-file=pki/tokens.csv \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file=pki/sa.pub --service-account-signing-key-file=pki/sa.key \
  --service-cluster-ip-range=10.96.0.0/24 \
  --authorization-mode=Node,RBAC \
  --kubelet-client-certificate=pki/apiserver-kubelet.crt --kubelet-client-key=pki/apiserver-kubelet.key \
  --kubelet-preferred-address-types=Hostname \
  --allow-privileged=true \
  --cert-dir="$LAB_DIR/pki/apiserver-generated"
wait_until 90 "the API server" curl -sf --cacert pki/ca.crt --cert pki/admin.crt --key pki/admin.key \
  "https://127.0.0.1:$APISERVER_PORT/readyz"
log "kube-apiserver ready on 127.0.0.1:$APISERVER_PORT"

start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig=kcm.kubeconfig \
  --authentication-kubeconfig=kcm.kubeconfig --authorization-kubeconfig=kcm.kubeconfig \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --service-account-private-key-file=pki/sa.key --root-ca-file=pki/ca.crt \
  --use-service-account-credentials=false \
  --cluster-signing-cert-file=pki/ca.crt --cluster-signing-key-file=pki/ca.key \
  --controllers='*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller'
start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig=scheduler.kubeconfig \
  --authentication-kubeconfig=scheduler.kubeconfig --authorization-kubeconfig=scheduler.kubeconfig \
  --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false

# --- kubelet ---------------------------------------------------------------------------
# Bidirectional mount propagation (CSI node plugins) needs a shared mount
mount --rbind "$KUBELET_DIR" "$KUBELET_DIR"
mount --make-rshared "$KUBELET_DIR"
cat >kubelet-config.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $LAB_DIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
# cgroup v1 host, no systemd
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
staticPodPath: $KUBELET_DIR/manifests
volumePluginDir: $KUBELET_DIR/volume-plugins
podLogsDir: $LAB_DIR/pod-logs
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
# kubelet's volume stats refresh (the e2e reads df inside the pod instead)
volumeStatsAggPeriod: 1m
# pod syncs (1m by default) are when the kubelet notices a volume to grow
# (NodeExpandVolume): sooner here, so the expansion checks take seconds
syncFrequency: 10s
EOF
start kubelet "$K8S_BIN/kubelet" --config=kubelet-config.yaml --kubeconfig=kubelet.kubeconfig \
  --root-dir="$KUBELET_DIR" --cert-dir="$LAB_DIR/pki/kubelet-generated" \
  --hostname-override="$NODE_NAME" --v="${KUBELET_V:-2}"
node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until 120 "node $NODE_NAME Ready" node_ready
log "node $NODE_NAME Ready"
wait_until 60 "the default ServiceAccount" kc get serviceaccount default -n default
trap - EXIT
log "lab up: export KUBECONFIG=$LAB_DIR/admin.kubeconfig (kubectl: $KUBECTL)"
