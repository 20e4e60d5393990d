#!/bin/bash
# Kubernetes end-to-end test of rbd-csi: installs the Helm chart into the lab
# cluster (lab-up.sh) against the e2e Ceph cluster (e2e/ceph/up.sh), runs the
# scenarios below, removes what it made, and prints `N passed, N failed`.
#
#   1 static     an image made by hand (rbd create --image-feature layering),
#                a PV for it, a bound PVC, a pod writes a file; the file is then
#                read from Ceph outside Kubernetes (rbd export + debugfs)
#   2 dynamic    a StorageClass with the classic in-tree parameters plus the
#                CSI secret parameters; PVC Bound, image in the pool with the
#                PVC recorded in its rbd-csi.owner image-meta, pod writes/reads
#   3 expand     the PVC grows; the filesystem in the running pod follows
#                (ext4; where the host lacks CAP_SYS_RESOURCE, the driver's
#                refusal and the growth at the next stage; and XFS online)
#   4 cleanup    pod deleted -> unmounted and unmapped on the node; PVC deleted
#                -> image gone from the pool and the trash
#   5 block      a volumeMode: Block PVC used as a device (dd write/read)
#   6 snapshot   a VolumeSnapshot of a PVC with data (snapshot-controller
#                deployed by snapshot.sh, the chart's VolumeSnapshotClass), a
#                larger PVC restored from it and a PVC cloned from the PVC, both
#                with the data (sha256); the source and the snapshot deleted
#                first, the restore still readable; nothing left behind
#   7 readme     README.md's Installation steps as written: its cephx user and
#                Secret commands, its StorageClass, its PVC and pod
#   8 setup      `rbd-csi setup` (built on the host) with the lab's ceph.conf and
#                admin keyring: a new pool with a quota and a new user; its YAML
#                validated by kubeconform (chart-check.sh setup) and applied as
#                printed; a PVC of its StorageClass bound, written and read by a
#                pod, then deleted with nothing left in the pool; a second run
#                changes nothing; `rbd-csi doctor` on the result passes
# Reported as well: install (helm install, the controller's privileges, the
# metrics endpoints) first and stable (no driver container restarted, no
# sidecar request refused by RBAC) last.
#
# usage: e2e.sh [SCENARIO...]      (default: all, in order)
#        e2e.sh install-only        only the install, left in place (make
#                                   conformance; the lab's teardown removes it)
# Needs: lab-up.sh done, images imported (images.sh), Ceph up with its env file
# at $E2E_CEPH_DIR/env. Settings: lib.sh, plus E2E_KEEP=1 to leave the release
# and the test objects in place (for debugging), E2E_TIMEOUT (seconds per wait,
# default 120).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=e2e/k8s/snapshot.sh
source "$(dirname "$0")/snapshot.sh"
LOG_TAG=e2e
export KUBECONFIG=$LAB_DIR/admin.kubeconfig

RELEASE=${E2E_RELEASE:-rbd-csi}
NS=${E2E_NAMESPACE:-rbd-csi}        # the driver
TNS=${E2E_TEST_NAMESPACE:-e2e-test} # the test objects
DRIVER=${E2E_DRIVER_NAME:-rbd.csi.dev}
CLUSTER_ID=e2e
TIMEOUT=${E2E_TIMEOUT:-120}
# every kubectl request's bound (lib.sh), above the waits that use TIMEOUT
KUBECTL_TIMEOUT=${KUBECTL_TIMEOUT:-$((TIMEOUT + 180))s}
STATE_DIR=$LAB_DIR/rbd-csi-state
ARTIFACTS=$LAB_DIR/e2e-artifacts
BUSYBOX=local.test/busybox:e2e
STATIC_IMAGE=ceph-image
# the driver's --metrics-address through the chart's metrics values; host
# ports (both pods use the host network), away from the usual 9681/9682
METRICS=${E2E_METRICS:-1}
METRICS_PORT=${E2E_METRICS_PORT:-19681}
METRICS_NODE_PORT=${E2E_METRICS_NODE_PORT:-19682}
LIVENESS_PORT=${E2E_LIVENESS_PORT:-19808}
LIVENESS_NODE_PORT=${E2E_LIVENESS_NODE_PORT:-19809}
mkdir -p "$ARTIFACTS"

[ -f "$E2E_CEPH_DIR/env" ] || die "no Ceph env at $E2E_CEPH_DIR/env: run e2e/ceph/up.sh with CEPH_DIR=$E2E_CEPH_DIR"
# shellcheck disable=SC1091
source "$E2E_CEPH_DIR/env"
POOL=${CEPH_POOL:-kube}
[ -x "$HELM" ] || die "helm missing ($HELM): run build-tools.sh helm"
kc get --raw /readyz >/dev/null 2>&1 || die "the lab's API server does not answer: run lab-up.sh"

# --- reporting ---------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()
# check DESCRIPTION COMMAND...: one assertion, printed with its outcome
check() {
  local what=$1
  shift
  if "$@"; then
    log "  ok: $what"
  else
    log "  FAIL: $what"
    FAILED_CHECKS+=("$what")
    return 1
  fi
}
# run_scenario NAME FUNCTION: a scenario passes when its function returns 0
run_scenario() {
  local name=$1 fn=$2 t0=${EPOCHREALTIME/./} rc
  log "=== $name"
  ( set -e; "$fn" )
  rc=$?
  local ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1))
    log "=== PASS $name ($((ms / 1000)).$((ms % 1000 / 100))s)"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    log "=== FAIL $name ($((ms / 1000)).$((ms % 1000 / 100))s)"
    diagnostics "$name"
  fi
}

# diagnostics NAME: state and logs that explain a failure, into $ARTIFACTS
diagnostics() {
  local d=$ARTIFACTS/$1
  mkdir -p "$d"
  kc get pv,pvc,pods,events -A -o wide >"$d/objects.txt" 2>&1
  kc describe pvc,pods -n "$TNS" >"$d/describe-test.txt" 2>&1
  kc describe pods -n "$NS" >"$d/describe-driver.txt" 2>&1
  local pod c
  for pod in $(kc get pods -n "$NS" -o name 2>/dev/null); do
    for c in $(kc get -n "$NS" "$pod" -o jsonpath='{.spec.containers[*].name}'); do
      kc logs -n "$NS" "$pod" -c "$c" >"$d/${pod#pod/}-$c.log" 2>&1
    done
  done
  grep -F "$LAB_DIR" /proc/self/mountinfo >"$d/mounts.txt" 2>&1
  losetup -l >"$d/loops.txt" 2>&1
  log "  diagnostics in $d"
  log "  last node plugin log lines:"
  tail -n 15 "$d"/*-node-*-driver.log 2>/dev/null | sed 's/^/    /'
}

# until_true SECONDS DESCRIPTION COMMAND...: wait_until that reports the wait
until_true() {
  local t0=${EPOCHREALTIME/./}
  wait_until "$@" || return 1
  local ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
  log "  ok: $2 ($((ms / 1000)).$((ms % 1000 / 100))s)"
}

pod_exec() { kc exec -n "$TNS" "$1" -- sh -c "$2"; }
# rbd and ceph against the e2e cluster, each call bounded (a dead cluster
# would otherwise keep them waiting for client_mount_timeout, 300 s)
rbdc() { timeout 60 rbd -c "$CEPH_CONF" --keyring "$CEPH_KEYRING" "$@"; }
cephc() { timeout 60 ceph -c "$CEPH_CONF" --keyring "$CEPH_KEYRING" "$@"; }
# rados_attach_names IMAGE NODE: the image's attachment record claims it for NODE
rados_attach_names() {
  timeout 60 rados -c "$CEPH_CONF" --keyring "$CEPH_KEYRING" -p "$POOL" get "rbd-csi.attach.$1" - | tail -n +2 | jq -e --arg n "$2" '.claims | has($n)' >/dev/null
}
pvc_phase() { kc get pvc -n "$TNS" "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
pvc_is_bound() { [ "$(pvc_phase "$1")" = Bound ]; }
pv_of() { kc get pvc -n "$TNS" "$1" -o jsonpath='{.spec.volumeName}'; }
pod_ready() { [ "$(kc get pod -n "$TNS" "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
gone() { ! kc get "$@" >/dev/null 2>&1; }
# attachments_of PV: "<node>=<attached>" of each VolumeAttachment of PV
attachments_of() {
  kc get volumeattachments -o jsonpath="{range .items[?(@.spec.source.persistentVolumeName==\"$1\")]}{.spec.nodeName}={.status.attached} {end}"
}
attached() { matches -w "$NODE_NAME=true" <<<"$(attachments_of "$1")"; }
detached() { [ -z "$(attachments_of "$1")" ]; }

# no_node_state PV [IMAGE]: nothing of the volume is left on the node: no
# mount of it (publish path under pods/, staging path under
# plugins/kubernetes.io/csi), no loop device over its mapper file, no
# rbd-fuse for its image. Once the PV is gone (no handle), or without IMAGE,
# no staged volume and no loop device of the driver at all.
no_node_state() {
  local pv=$1 image=${2:-}
  grep -F "$KUBELET_DIR/" /proc/self/mountinfo | matches -F "/$pv/" && return 1
  local handle stage=globalmount
  # the kubelet stages a volume at .../<driver>/<sha256 of its handle>/globalmount
  handle=$(kc get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}' 2>/dev/null) &&
    [ -n "$handle" ] && stage=$DRIVER/$(printf '%s' "$handle" | sha256sum | cut -d' ' -f1)/globalmount
  grep -F "$KUBELET_DIR/plugins/kubernetes.io/csi/" /proc/self/mountinfo | matches -F "$stage" && return 1
  if [ -n "$image" ]; then
    # the fuse mapper's loop devices are over <state dir>/fuse/<pool>/<image>/mnt/<image>
    losetup -l -n -O BACK-FILE 2>/dev/null | matches -F "/$image/" && return 1
    pgrep -f "rbd-fuse.* -r $image( |$)" >/dev/null && return 1
  else
    losetup -l -n -O BACK-FILE 2>/dev/null | matches -F "$STATE_DIR/" && return 1
  fi
  return 0
}

# claim NAME CLASS SIZE [SPEC_LINE...]: a ReadWriteOnce PVC in the test
# namespace; each SPEC_LINE is one more line of its spec (volumeMode,
# dataSource)
claim() {
  local name=$1 class=$2 size=$3 extra=""
  shift 3
  local l
  for l in "$@"; do extra+="  $l"$'\n'; done
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $name, namespace: $TNS}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $class
${extra}  resources: {requests: {storage: $size}}
EOF
}

# busybox_pod NAME PVC MODE SCRIPT: a pod using PVC at /data (MODE fs) or as
# /dev/xvda (MODE block), running SCRIPT then sleeping
busybox_pod() {
  local name=$1 pvc=$2 mode=$3 script=$4 use
  if [ "$mode" = block ]; then
    use="volumeDevices: [{name: vol, devicePath: /dev/xvda}]"
  else
    use="volumeMounts: [{name: vol, mountPath: /data}]"
  fi
  kc apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $TNS}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: $BUSYBOX
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", $(printf '%s' "$script; exec sleep 3600" | jq -Rs .)]
    $use
  volumes:
  - name: vol
    persistentVolumeClaim: {claimName: $pvc}
EOF
}

# image_of_pvc PVC: the image whose rbd-csi.owner names TNS/PVC
image_of_pvc() {
  local img meta
  for img in $(rbdc ls "$POOL"); do
    meta=$(rbdc image-meta get "$POOL/$img" rbd-csi.owner 2>/dev/null) || continue
    if [ "$(jq -r '.pvcName + "/" + .pvcNamespace' <<<"$meta" 2>/dev/null)" = "$1/$TNS" ]; then
      echo "$img"
      return 0
    fi
  done
  return 1
}

# --- install --------------------------------------------------------------------------
install_driver() {
  local user_key admin_key
  # a Ceph user for the nodes, as the classic guide has it: rbd profile on the pool only
  user_key=$(cephc auth get-or-create-key client.kube \
    mon 'profile rbd' osd "profile rbd pool=$POOL" mgr "profile rbd pool=$POOL")
  admin_key=$CEPH_ADMIN_KEY
  # The node plugin mounts its state directory with Bidirectional
  # propagation, which needs a shared mount on the host; systemd hosts have
  # / shared, this machine does not (the kubelet dir is made shared by lab-up)
  mkdir -p "$STATE_DIR"
  mountpoint -q "$STATE_DIR" || mount --bind "$STATE_DIR" "$STATE_DIR"
  mount --make-rshared "$STATE_DIR"
  # csi-snapshotter (in the chart's controller by default) watches the
  # snapshot CRDs, which clusters normally ship; the lab gets them from
  # external-snapshotter's client module (build-tools.sh sidecars)
  local crd=$RBDCSI_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/crd
  compgen -G "$crd/snapshot.storage.k8s.io_*.yaml" >/dev/null || { log "  no snapshot CRDs in $crd: run build-tools.sh sidecars"; return 1; }
  local f
  for f in "$crd"/snapshot.storage.k8s.io_*.yaml; do kc apply -f "$f" >/dev/null; done
  kc wait --for=condition=Established --timeout=60s crd/volumesnapshotclasses.snapshot.storage.k8s.io \
    crd/volumesnapshotcontents.snapshot.storage.k8s.io crd/volumesnapshots.snapshot.storage.k8s.io >/dev/null
  install_snapshot_controller
  kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc create namespace "$TNS" --dry-run=client -o yaml | kc apply -f - >/dev/null
  local values=$ARTIFACTS/values-e2e.yaml
  (
    umask 077
    cat >"$values" <<EOF
# generated by e2e/k8s/e2e.sh: the chart's defaults changed only where the lab
# needs it (local images, no registry, no kube-proxy, no kernel rbd/nbd)
driverName: $DRIVER
kubeletDir: $KUBELET_DIR
logLevel: 4
instanceID: e2e
kubernetesAPI: {host: 127.0.0.1, port: "$APISERVER_PORT"}
clusters:
  - clusterID: $CLUSTER_ID
    monitors: ["$CEPH_MON_HOST"]
images:
  driver: {repository: local.test/rbd-csi, tag: e2e, pullPolicy: Never}
  provisioner: {repository: local.test/csi-provisioner, tag: $PROVISIONER_VERSION, pullPolicy: Never}
  resizer: {repository: local.test/csi-resizer, tag: $RESIZER_VERSION, pullPolicy: Never}
  attacher: {repository: local.test/csi-attacher, tag: $ATTACHER_VERSION, pullPolicy: Never}
  snapshotter: {repository: local.test/csi-snapshotter, tag: $SNAPSHOTTER_VERSION, pullPolicy: Never}
  # the upstream sidecars, built from their source tarballs (build-tools.sh upstream)
  nodeDriverRegistrar: {repository: local.test/csi-node-driver-registrar, tag: $REGISTRAR_VERSION, pullPolicy: Never}
  livenessProbe: {repository: local.test/livenessprobe, tag: $LIVENESSPROBE_VERSION, pullPolicy: Never}
rbac:
  secretNamespaces: [kube-system]
metrics:
  enabled: $([ "$METRICS" = 1 ] && echo true || echo false)
  port: $METRICS_PORT
  nodePort: $METRICS_NODE_PORT
  path: /metrics
controller:
  replicas: 1
  hostNetwork: true
  # the chart's default: on, bound to 127.0.0.1 (hostNetwork)
  livenessProbe: {enabled: true, port: $LIVENESS_PORT}
  listingCredentials:
    clusters:
      $CLUSTER_ID: {userID: admin, userKey: "$admin_key"}
node:
  hostNetwork: true
  mapper: fuse
  stateDir: $STATE_DIR
  livenessProbe: {enabled: true, port: $LIVENESS_NODE_PORT}
secrets:
  # in-tree shape (only "key"): the user comes from adminId / userId
  - {name: ceph-secret-admin, namespace: kube-system, type: kubernetes.io/rbd, key: "$admin_key"}
  - {name: ceph-secret-user, namespace: $TNS, type: kubernetes.io/rbd, key: "$user_key"}
storageClasses:
  # the chart's secretRef shorthand without fsType (the driver's default):
  # the class the conformance testsuites copy (conformance/driver.yaml)
  - name: rbd-default
    allowVolumeExpansion: true
    secretRef: {name: ceph-secret-admin, namespace: kube-system}
    parameters:
      clusterID: $CLUSTER_ID
      pool: $POOL
  # ceph-csi style, with the chart's secretRef shorthand, for XFS volumes
  - name: rbd-xfs
    allowVolumeExpansion: true
    secretRef: {name: ceph-secret-admin, namespace: kube-system}
    parameters:
      clusterID: $CLUSTER_ID
      pool: $POOL
      csi.storage.k8s.io/fstype: xfs
  - name: rbd-legacy
    allowVolumeExpansion: true
    parameters:
      # the classic kubernetes.io/rbd parameters, unchanged
      monitors: "$CEPH_MON_HOST"
      adminId: admin
      adminSecretName: ceph-secret-admin
      adminSecretNamespace: kube-system
      pool: $POOL
      userId: kube
      userSecretName: ceph-secret-user
      fsType: ext4
      imageFormat: "2"
      imageFeatures: layering
      # what a user must add for CSI
      csi.storage.k8s.io/provisioner-secret-name: ceph-secret-admin
      csi.storage.k8s.io/provisioner-secret-namespace: kube-system
      csi.storage.k8s.io/controller-expand-secret-name: ceph-secret-admin
      csi.storage.k8s.io/controller-expand-secret-namespace: kube-system
      csi.storage.k8s.io/node-stage-secret-name: ceph-secret-user
      csi.storage.k8s.io/node-stage-secret-namespace: \${pvc.namespace}
volumeSnapshotClasses:
  - name: $SNAP_CLASS
    secretRef: {name: ceph-secret-admin, namespace: kube-system}
    parameters:
      clusterID: $CLUSTER_ID
EOF
  )
  "$HELM" upgrade --install "$RELEASE" "$REPO_ROOT/charts/rbd-csi" -n "$NS" -f "$values" \
    --wait --timeout "${TIMEOUT}s" >"$ARTIFACTS/helm-install.txt" 2>&1 || {
    cat "$ARTIFACTS/helm-install.txt" >&2
    return 1
  }
  log "  ok: helm install $RELEASE (controller and node plugin Ready)"
  registered() { kc get csinode "$NODE_NAME" -o jsonpath='{.spec.drivers[*].name}' | matches -w "$DRIVER"; }
  until_true "$TIMEOUT" "driver registered with the kubelet (CSINode)" registered
  local names
  names=$(kc get pods -n "$NS" -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].spec.containers[*].name}')
  check "controller runs: $names" grep -qw csi-snapshotter <<<"$names"
  check_sidecars
  check_security
  check_attach_guard "$values"
  [ "$METRICS" = 1 ] || { log "  metrics not checked: E2E_METRICS=0"; return 0; }
  local port
  for port in "$METRICS_PORT" "$METRICS_NODE_PORT"; do
    check "metrics served on 127.0.0.1:$port/metrics (rbdcsi_* series)" \
      sh -c "curl -sf --max-time 5 http://127.0.0.1:$port/metrics | grep -q '^rbdcsi_'"
  done
}

# check_sidecars: the pods run the upstream registrar and livenessprobe, and
# each /healthz answers on the node's loopback, where the kubelet probes it
check_sidecars() {
  local images port
  images=$(kc get pods -n "$NS" -o jsonpath='{range .items[*]}{range .spec.containers[*]}{.image} {end}{end}')
  log "  images: $images"
  check "node plugin runs the upstream node-driver-registrar $REGISTRAR_VERSION" \
    grep -qw "local.test/csi-node-driver-registrar:$REGISTRAR_VERSION" <<<"$images"
  check "controller runs csi-attacher $ATTACHER_VERSION (attachRequired)" \
    grep -qw "local.test/csi-attacher:$ATTACHER_VERSION" <<<"$images"
  check "both pods run the upstream livenessprobe $LIVENESSPROBE_VERSION" \
    [ "$(tr ' ' '\n' <<<"$images" | grep -cx "local.test/livenessprobe:$LIVENESSPROBE_VERSION")" -eq 2 ]
  for port in "$LIVENESS_PORT" "$LIVENESS_NODE_PORT"; do
    # Ready means the container started, not that it listens yet: the
    # probe gets the time the kubelet's first liveness check would give it
    healthz() { curl -sf --max-time 5 "http://127.0.0.1:$port/healthz" -o /dev/null; }
    until_true 30 "livenessprobe answers on 127.0.0.1:$port/healthz" healthz || return 1
    check "livenessprobe listens on the loopback only (port $port)" \
      [ "$(ss -Hltn "sport = :$port" | awk '{print $4}')" = "127.0.0.1:$port" ]
  done
}

# check_attach_guard VALUES: an upgrade that flips csiDriver.attachRequired,
# which Kubernetes cannot change on the existing CSIDriver, is refused by the
# chart before anything is applied, with the command that unblocks it (a
# server-side dry run: the chart's lookup sees the live CSIDriver)
check_attach_guard() {
  local out rc=0
  out=$("$HELM" upgrade "$RELEASE" "$REPO_ROOT/charts/rbd-csi" -n "$NS" -f "$1" --set csiDriver.attachRequired=false \
    --dry-run=server 2>&1) || rc=$?
  refused() { [ "$rc" -ne 0 ] && grep -qF "kubectl delete csidriver $DRIVER" <<<"$out"; }
  check "an upgrade flipping attachRequired is refused with what to do" refused || { log "  helm said: $(tail -n 3 <<<"$out")"; return 1; }
}

# check_security: what the chart promises about privileges holds in the
# running controller, not only in its templates
check_security() {
  local pod uid
  pod=$(kc get pods -n "$NS" -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].metadata.name}')
  drv() { kc exec -n "$NS" "$pod" -c driver -- "$@" 2>/dev/null; }
  non_root() { uid=$(drv id -u) && [ -n "$uid" ] && [ "$uid" != 0 ]; }
  no_caps() { drv grep -Eq '^CapEff:[[:space:]]+0+$' /proc/self/status; }
  no_token() { drv test -d /proc && ! drv test -e /var/run/secrets/kubernetes.io/serviceaccount/token; }
  read_only() { drv test -d /proc && ! drv touch /probe; }
  check "controller driver runs as a non-root user" non_root
  check "controller driver has no capabilities" no_caps
  check "controller driver has no API token (only its sidecars do)" no_token
  check "controller driver's root filesystem is read-only" read_only
}

# no container of the driver's pods restarted during the run (a sidecar
# that exits on its own, a crashing driver)
driver_restarts() {
  kc get pods -n "$NS" -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.name}={.restartCount} {end}{end}'
}
# sidecar log lines where the API server refused a request (RBAC too tight).
# Not counted: csi-snapshotter's start-up probe for VolumeGroupSnapshot CRDs,
# which it reads as "feature off"; the driver has no group snapshots, so the
# chart grants nothing on them.
forbidden_lines() {
  local pod c
  for pod in $(kc get pods -n "$NS" -l app.kubernetes.io/component=controller -o name); do
    for c in $(kc get -n "$NS" "$pod" -o jsonpath='{.spec.containers[*].name}'); do
      kc logs -n "$NS" "$pod" -c "$c" 2>/dev/null | grep -i 'forbidden' |
        grep -v 'VolumeGroupSnapshot CRDs were not found; disabling' | sed "s|^|$c: |" || true
    done
  done
}
check_stable() {
  local r f
  r=$(driver_restarts)
  # An empty list would pass the restart check below without proving it.
  check "the driver's containers are there to look at ($(wc -w <<<"$r") found)" [ -n "$r" ]
  check "no container of the driver restarted ($r)" [ -z "$(tr ' ' '\n' <<<"$r" | grep -v '=0$' | grep .)" ]
  f=$(forbidden_lines)
  [ -z "$f" ] || log "  $(head -n 3 <<<"$f")"
  check "no request of the controller's sidecars was forbidden (RBAC)" [ -z "$f" ]
}

# --- 1: static provisioning ----------------------------------------------------------
scenario_static() {
  rbdc rm "$POOL/$STATIC_IMAGE" >/dev/null 2>&1 || true
  rbdc create "$POOL/$STATIC_IMAGE" --size 128M --image-feature layering
  log "  ok: rbd create $POOL/$STATIC_IMAGE --size 128M --image-feature layering"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: e2e-static-pv}
spec:
  capacity: {storage: 128Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  volumeMode: Filesystem
  claimRef: {namespace: $TNS, name: static-pvc}
  csi:
    driver: $DRIVER
    volumeHandle: $STATIC_IMAGE
    fsType: ext4
    volumeAttributes:
      clusterID: $CLUSTER_ID
      pool: $POOL
      imageName: $STATIC_IMAGE
      staticVolume: "true"
      # the in-tree Secret holds only a key: whose (as userId in a StorageClass)
      userId: kube
    nodeStageSecretRef: {name: ceph-secret-user, namespace: $TNS}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: static-pvc, namespace: $TNS}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: e2e-static-pv
  resources: {requests: {storage: 128Mi}}
EOF
  until_true 60 "static PVC Bound to e2e-static-pv" pvc_is_bound static-pvc
  busybox_pod static-writer static-pvc fs 'echo "written by rbd-csi e2e" > /data/hello.txt && sync' >/dev/null
  until_true "$TIMEOUT" "pod static-writer Running with the volume" pod_ready static-writer
  check "file written in the pod" [ "$(pod_exec static-writer 'cat /data/hello.txt')" = "written by rbd-csi e2e" ]
  kc delete pod -n "$TNS" static-writer --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "volume unmounted and unmapped on the node" no_node_state e2e-static-pv "$STATIC_IMAGE"
  # read it back from Ceph itself, outside Kubernetes and the driver
  local tmp
  tmp=$(mktemp -d)
  rbdc export --no-progress "$POOL/$STATIC_IMAGE" "$tmp/image" >/dev/null 2>&1
  local got
  got=$(debugfs -R "cat /hello.txt" "$tmp/image" 2>/dev/null)
  rm -rf "$tmp"
  check "file read from the image in Ceph (rbd export + debugfs): \"$got\"" [ "$got" = "written by rbd-csi e2e" ]
  kc delete pvc -n "$TNS" static-pvc --wait=true --timeout=60s >/dev/null
  kc delete pv e2e-static-pv --wait=true --timeout=60s >/dev/null
  check "the Retain PV left the image in place" rbdc info "$POOL/$STATIC_IMAGE" >/dev/null
  rbdc rm --no-progress "$POOL/$STATIC_IMAGE" >/dev/null 2>&1
}

# --- 2: dynamic provisioning with the legacy StorageClass ---------------------------------
DYN_PVC=dyn-pvc
scenario_dynamic() {
  claim "$DYN_PVC" rbd-legacy 128Mi
  until_true "$TIMEOUT" "PVC $DYN_PVC Bound" pvc_is_bound "$DYN_PVC"
  local pv img owner
  pv=$(pv_of "$DYN_PVC")
  img=$(image_of_pvc "$DYN_PVC") || { log "  FAIL: no image in $POOL with rbd-csi.owner naming $TNS/$DYN_PVC"; return 1; }
  owner=$(rbdc image-meta get "$POOL/$img" rbd-csi.owner)
  log "  ok: image $POOL/$img for $pv, rbd-csi.owner=$owner"
  check "image has the layering feature only" [ "$(rbdc info --format json "$POOL/$img" | jq -c .features)" = '["layering"]' ]
  check "PV records fsType ext4" [ "$(kc get pv "$pv" -o jsonpath='{.spec.csi.fsType}')" = ext4 ]
  busybox_pod dyn-app "$DYN_PVC" fs 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && sha256sum /data/blob > /data/blob.sha256 && sync' >/dev/null
  until_true "$TIMEOUT" "pod dyn-app Running with the volume mounted" pod_ready dyn-app
  check "volume mounted at /data as ext4" pod_exec dyn-app 'grep -q " /data ext4 " /proc/mounts'
  check "VolumeAttachment of $pv attached to the node ($(attachments_of "$pv"))" attached "$pv"
  check "attachment record in Ceph names the node" rados_attach_names "$img" "$NODE_NAME"
  check "data written and read back (sha256 of 8 MiB)" pod_exec dyn-app 'sha256sum -c /data/blob.sha256 >/dev/null'
}

# --- 3: expansion ------------------------------------------------------------------------
# data_mib POD: size of /data in POD, in MiB
data_mib() { pod_exec "$1" 'df -m /data | tail -n 1' | awk '{print $2}'; }
# grow_pvc PVC SIZE: request SIZE and wait for the PV to have it
grow_pvc() {
  local pv
  kc patch pvc -n "$TNS" "$1" --type merge -p "{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"$2\"}}}}" >/dev/null
  pv=$(pv_of "$1")
  pv_has() { [ "$(kc get pv "$pv" -o jsonpath='{.spec.capacity.storage}')" = "$1" ]; }
  until_true "$TIMEOUT" "PV of $1 has $2 (ControllerExpandVolume)" pv_has "$2"
}
# pvc_has PVC SIZE: the claim's status reports SIZE (node expansion done)
pvc_has() { [ "$(kc get pvc -n "$TNS" "$1" -o jsonpath='{.status.capacity.storage}')" = "$2" ]; }
# Growing a mounted ext4 (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE; a
# privileged container has it only if the host's bounding set does.
host_has_cap_sys_resource() {
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  [ $(((16#$bnd >> 24) & 1)) = 1 ]
}

scenario_expand() {
  local before
  before=$(data_mib dyn-app)
  grow_pvc "$DYN_PVC" 256Mi
  ext4_grown() { [ "$(data_mib dyn-app)" -gt $((before + 100)) ]; }
  if host_has_cap_sys_resource; then
    until_true "$TIMEOUT" "ext4 in the running pod grown (NodeExpandVolume)" ext4_grown
  else
    log "  note: this machine's capability bounding set lacks CAP_SYS_RESOURCE, so no process here may grow a mounted ext4;"
    log "        checked instead: the driver's FailedPrecondition reaches the PVC, and the next stage grows it (XFS is grown online below)"
    refused() { kc get pvc -n "$TNS" "$DYN_PVC" -o jsonpath='{.status.conditions[*].message}' | matches CAP_SYS_RESOURCE; }
    until_true "$TIMEOUT" "PVC condition names CAP_SYS_RESOURCE and the remedy" refused
    kc delete pod -n "$TNS" dyn-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
    busybox_pod dyn-app "$DYN_PVC" fs 'true' >/dev/null
    until_true "$TIMEOUT" "pod dyn-app restarted with the volume" pod_ready dyn-app
    until_true "$TIMEOUT" "ext4 grown when the volume was staged again" ext4_grown
  fi
  log "  ok: df /data (ext4): ${before} MiB -> $(data_mib dyn-app) MiB"
  until_true "$TIMEOUT" "PVC $DYN_PVC status capacity 256Mi" pvc_has "$DYN_PVC" 256Mi
  check "data intact after expansion" pod_exec dyn-app 'sha256sum -c /data/blob.sha256 >/dev/null'
  expand_xfs_online
}

# expand_xfs_online: an XFS volume (mkfs.xfs wants at least 300 MiB) grows
# in its running pod: xfs_growfs needs only CAP_SYS_ADMIN
expand_xfs_online() {
  claim xfs-pvc rbd-xfs 320Mi
  until_true "$TIMEOUT" "PVC xfs-pvc Bound" pvc_is_bound xfs-pvc
  busybox_pod xfs-app xfs-pvc fs 'echo kept > /data/kept && sync' >/dev/null
  until_true "$TIMEOUT" "pod xfs-app Running with the volume" pod_ready xfs-app
  check "volume mounted at /data as xfs" pod_exec xfs-app 'grep -q " /data xfs " /proc/mounts'
  local before pv
  before=$(data_mib xfs-app)
  pv=$(pv_of xfs-pvc)
  grow_pvc xfs-pvc 512Mi
  # +192 MiB of device; XFS keeps part of it for its log and metadata
  xfs_grown() { [ "$(data_mib xfs-app)" -gt $((before + 150)) ]; }
  until_true "$TIMEOUT" "xfs in the running pod grown (NodeExpandVolume)" xfs_grown
  log "  ok: df /data (xfs): ${before} MiB -> $(data_mib xfs-app) MiB"
  until_true "$TIMEOUT" "PVC xfs-pvc status capacity 512Mi" pvc_has xfs-pvc 512Mi
  check "data intact after expansion" [ "$(pod_exec xfs-app 'cat /data/kept')" = kept ]
  kc delete pod -n "$TNS" xfs-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
  kc delete pvc -n "$TNS" xfs-pvc --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "PV $pv deleted" gone pv "$pv"
}

# --- 4: cleanup --------------------------------------------------------------------------
scenario_cleanup() {
  local pv img
  pv=$(pv_of "$DYN_PVC")
  img=$(image_of_pvc "$DYN_PVC")
  kc delete pod -n "$TNS" dyn-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
  log "  ok: pod dyn-app deleted"
  until_true "$TIMEOUT" "volume unmounted and unmapped on the node" no_node_state "$pv" "$img"
  until_true "$TIMEOUT" "VolumeAttachment of $pv gone (ControllerUnpublishVolume)" detached "$pv"
  # the ReadWriteOnce volume moves to a second pod: attached again, the
  # first pod's data read back there, detached when that pod goes
  busybox_pod dyn-app2 "$DYN_PVC" fs 'true' >/dev/null
  until_true "$TIMEOUT" "second pod dyn-app2 Running with the volume" pod_ready dyn-app2
  check "VolumeAttachment of $pv attached again for dyn-app2 ($(attachments_of "$pv"))" attached "$pv"
  check "dyn-app2 reads what dyn-app wrote (sha256 of 8 MiB)" pod_exec dyn-app2 'sha256sum -c /data/blob.sha256 >/dev/null'
  kc delete pod -n "$TNS" dyn-app2 --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "volume unmounted and unmapped after dyn-app2" no_node_state "$pv" "$img"
  until_true "$TIMEOUT" "VolumeAttachment of $pv gone after dyn-app2" detached "$pv"
  kc delete pvc -n "$TNS" "$DYN_PVC" --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "PV $pv deleted" gone pv "$pv"
  image_absent() { ! rbdc ls "$POOL" | matches -x "$img"; }
  until_true "$TIMEOUT" "image $img gone from pool $POOL" image_absent
  trash_clear() { ! rbdc trash ls "$POOL" | matches -w "$img"; }
  until_true "$TIMEOUT" "image $img not left in the trash" trash_clear
  check "nothing of the lab's volumes mounted" no_node_state "$pv" "$img"
}

# --- 5: raw block -----------------------------------------------------------------------
scenario_block() {
  claim block-pvc rbd-legacy 64Mi "volumeMode: Block"
  until_true "$TIMEOUT" "block PVC Bound" pvc_is_bound block-pvc
  local pv img
  pv=$(pv_of block-pvc)
  check "PV volumeMode Block" [ "$(kc get pv "$pv" -o jsonpath='{.spec.volumeMode}')" = Block ]
  busybox_pod block-app block-pvc block 'dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null && dd if=/tmp/pattern of=/dev/xvda bs=1M seek=8 conv=fsync 2>/dev/null' >/dev/null
  until_true "$TIMEOUT" "pod block-app Running with the device" pod_ready block-app
  check "/dev/xvda is a 64 MiB block device" [ "$(pod_exec block-app '[ -b /dev/xvda ] && blockdev --getsize64 /dev/xvda')" = 67108864 ]
  check "4 MiB written with dd and read back identical" \
    pod_exec block-app 'dd if=/dev/xvda of=/tmp/back bs=1M skip=8 count=4 iflag=direct 2>/dev/null && cmp /tmp/pattern /tmp/back'
  img=$(image_of_pvc block-pvc)
  kc delete pod -n "$TNS" block-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "block volume unmapped on the node" no_node_state "$pv" "$img"
  kc delete pvc -n "$TNS" block-pvc --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "PV $pv deleted" gone pv "$pv"
  image_absent() { ! rbdc ls "$POOL" | matches -x "$img"; }
  until_true "$TIMEOUT" "image $img gone from pool $POOL" image_absent
}

# --- 6: the README's Installation section, as a new user copies it ----------------------
README=$REPO_ROOT/README.md
# readme_block LANG N: the Nth fenced LANG block of README.md's "## Installation"
readme_block() {
  awk -v open="\`\`\`$1" -v want="$2" '
    /^## / { inside = ($0 == "## Installation"); next }
    inside && $0 == open { n++; if (n == want) { on = 1; next } }
    inside && on && /^```$/ { exit }
    on { print }' "$README"
}
scenario_readme() {
  local sc_yaml app_yaml secret_sh
  secret_sh=$(readme_block sh 3)
  sc_yaml=$(readme_block yaml 1)
  app_yaml=$(readme_block yaml 2)
  blocks_found() {
    grep -q 'create secret generic ceph-rbd' <<<"$secret_sh" && grep -q '^kind: StorageClass' <<<"$sc_yaml" &&
      grep -q '^kind: PersistentVolumeClaim' <<<"$app_yaml" && grep -q '^kind: Pod' <<<"$app_yaml"
  }
  check "README's Installation has the Secret commands, a StorageClass, a PVC and a pod" blocks_found
  # step 3 as written: the ceph and kubectl commands against the lab
  # (namespace rbd-csi and pool kube are the lab's defaults too)
  [ "$NS" = rbd-csi ] && [ "$POOL" = kube ] || { log "  readme scenario needs namespace rbd-csi and pool kube"; return 1; }
  (
    ceph() { cephc "$@"; }
    kubectl() { kc "$@"; }
    eval "$secret_sh"
  ) >/dev/null
  log "  ok: README step 3: cephx user client.kube and Secret $NS/ceph-rbd"
  # step 4: the StorageClass, with the lab's clusterID for "prod"
  sed "s/^  clusterID: prod\$/  clusterID: $CLUSTER_ID/" <<<"$sc_yaml" | kc apply -f - >/dev/null
  log "  ok: README step 4: StorageClass rbd"
  # step 5: the PVC and pod, with the lab's busybox image (nothing is pulled here)
  sed "s#^\( *\)image: busybox\$#\1image: $BUSYBOX\n\1imagePullPolicy: Never#" <<<"$app_yaml" | kc apply -n "$TNS" -f - >/dev/null
  until_true "$TIMEOUT" "README's PVC data Bound" pvc_is_bound data
  until_true "$TIMEOUT" "README's pod app Running" pod_ready app
  check "the pod wrote /data/hello" [ "$(pod_exec app 'cat /data/hello')" = hello ]
  local img pv
  pv=$(pv_of data)
  img=$(image_of_pvc data) || { log "  FAIL: no image in $POOL with rbd-csi.owner naming $TNS/data"; return 1; }
  log "  ok: image $POOL/$img carries rbd-csi.owner for $TNS/data"
  # the README's pod keeps the default grace period, which its sh ignores
  kc delete pod -n "$TNS" app --grace-period=1 --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "volume unmounted and unmapped on the node" no_node_state "$pv" "$img"
  kc delete pvc -n "$TNS" data --wait=true --timeout="${TIMEOUT}s" >/dev/null
  image_absent() { ! rbdc ls "$POOL" | matches -x "$img"; }
  until_true "$TIMEOUT" "image $img deleted with the user of README step 3" image_absent
  kc delete storageclass rbd --wait=true >/dev/null
  kc delete secret -n "$NS" ceph-rbd >/dev/null
}

# --- 8: rbd-csi setup -------------------------------------------------------------------
SETUP_POOL=e2e-setup
SETUP_USER=e2e-setup
SETUP_CLASS=e2e-setup
SETUP_BIN=$LAB_DIR/rbd-csi-host
# rbd_csi_setup ARGS...: as an operator runs it, with ceph.conf and the admin
# keyring (not the env file's key), for the lab's release
rbd_csi_setup() {
  env -u CEPH_MON_HOST -u CEPH_ADMIN_KEY "$SETUP_BIN" setup --ceph-conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" \
    --pool "$SETUP_POOL" --user "$SETUP_USER" --quota 1Gi --cluster-id "$CLUSTER_ID" --namespace "$NS" \
    --configmap "$RELEASE-config" --driver-name "$DRIVER" --storageclass "$SETUP_CLASS" --snapshotclass "$SETUP_CLASS" \
    --node-mapper fuse "$@"
}
scenario_setup() {
  local out=$ARTIFACTS/setup.yaml err=$ARTIFACTS/setup.stderr pv img
  (cd "$REPO_ROOT" && go build -tags "${GO_TAGS:-pacific}" -o "$SETUP_BIN" ./cmd/rbd-csi) || { log "  FAIL: go build ./cmd/rbd-csi"; return 1; }
  # the Secret with the key is asked for: the file is the operator's to guard
  (umask 077 && rbd_csi_setup --with-secret >"$out" 2>"$err") || { cat "$err" >&2; log "  FAIL: rbd-csi setup"; return 1; }
  check "rbd-csi setup made the pool, its quota and the user" grep -q "^done: ceph auth get-or-create client.$SETUP_USER " "$err"
  check "its YAML is valid against the Kubernetes schemas" "$E2E_K8S_DIR/chart-check.sh" setup "$out"
  second_run_idle() { rbd_csi_setup 2>&1 >/dev/null | matches '^nothing to change'; }
  check "a second run changes nothing" second_run_idle
  kc apply -f "$out" >/dev/null || { log "  FAIL: kubectl apply of the setup YAML"; return 1; }
  log "  ok: the setup YAML applied as printed"
  claim setup-data "$SETUP_CLASS" 64Mi
  until_true "$TIMEOUT" "PVC setup-data Bound through StorageClass $SETUP_CLASS" pvc_is_bound setup-data
  busybox_pod setup-app setup-data fs 'echo wired > /data/hello && sync' >/dev/null
  until_true "$TIMEOUT" "pod setup-app Running" pod_ready setup-app
  check "the pod wrote and read /data/hello" [ "$(pod_exec setup-app 'cat /data/hello')" = wired ]
  pv=$(pv_of setup-data)
  img=$(POOL=$SETUP_POOL image_of_pvc setup-data) || { log "  FAIL: no image in $SETUP_POOL for $TNS/setup-data"; return 1; }
  log "  ok: image $SETUP_POOL/$img made as client.$SETUP_USER"
  doctor_clean() { env -u CEPH_MON_HOST -u CEPH_ADMIN_KEY "$SETUP_BIN" doctor --ceph-conf "$CEPH_CONF" --keyring "$CEPH_KEYRING" \
    --pool "$SETUP_POOL" --user "$SETUP_USER" --kernels "$(uname -r)" --node-mapper fuse >"$ARTIFACTS/doctor.txt" 2>&1; }
  check "rbd-csi doctor finds nothing that would fail" doctor_clean
  kc delete pod -n "$TNS" setup-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "volume unmounted and unmapped on the node" no_node_state "$pv" "$img"
  kc delete pvc -n "$TNS" setup-data --wait=true --timeout="${TIMEOUT}s" >/dev/null
  setup_pool_empty() { [ -z "$(rbdc ls "$SETUP_POOL")" ] && [ -z "$(rbdc trash ls "$SETUP_POOL")" ]; }
  until_true "$TIMEOUT" "nothing left in pool $SETUP_POOL" setup_pool_empty
  setup_teardown
}
# setup_teardown: what the setup scenario made (also after a failure)
setup_teardown() {
  kc delete storageclass "$SETUP_CLASS" --ignore-not-found >/dev/null 2>&1
  kc delete volumesnapshotclass "$SETUP_CLASS" --ignore-not-found >/dev/null 2>&1
  kc delete secret -n "$NS" "rbd-csi-$SETUP_USER" --ignore-not-found >/dev/null 2>&1
  cephc osd pool delete "$SETUP_POOL" "$SETUP_POOL" --yes-i-really-really-mean-it >/dev/null 2>&1
  cephc auth del "client.$SETUP_USER" >/dev/null 2>&1
  rm -f "$ARTIFACTS/setup.yaml"
  return 0
}

# --- teardown: pods first, then the kubelet must unmount, then the driver may go -------------
teardown() {
  [ "${E2E_KEEP:-0}" = 1 ] && { log "E2E_KEEP=1: leaving the release and test objects"; return 0; }
  log "=== teardown"
  kc delete volumesnapshots -n "$TNS" --all --wait=true --timeout="${TIMEOUT}s" >/dev/null 2>&1
  kc delete pods -n "$TNS" --all --wait=true --timeout="${TIMEOUT}s" >/dev/null 2>&1
  no_pod_volumes() { ! grep -F "$KUBELET_DIR/pods/" /proc/self/mountinfo | matches 'kubernetes.io~csi'; }
  until_true "$TIMEOUT" "the kubelet unmounted every CSI volume" no_pod_volumes || true
  no_staged() { ! grep -qF "$KUBELET_DIR/plugins/kubernetes.io/csi/" /proc/self/mountinfo; }
  until_true "$TIMEOUT" "every CSI volume unstaged" no_staged || true
  kc delete pvc -n "$TNS" --all --wait=true --timeout="${TIMEOUT}s" >/dev/null 2>&1
  kc delete pv e2e-static-pv --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
  no_driver_pvs() { [ -z "$(kc get pv -o jsonpath="{.items[?(@.spec.csi.driver==\"$DRIVER\")].metadata.name}")" ]; }
  until_true "$TIMEOUT" "the driver's PVs deleted" no_driver_pvs || true
  "$HELM" uninstall "$RELEASE" -n "$NS" --wait --timeout "${TIMEOUT}s" >/dev/null 2>&1 && log "  ok: helm uninstall $RELEASE"
  kc delete namespace "$TNS" --wait=false >/dev/null 2>&1
  # what the readme scenario made, if it stopped half way
  kc delete storageclass rbd --ignore-not-found >/dev/null 2>&1
  kc delete secret -n "$NS" ceph-rbd --ignore-not-found >/dev/null 2>&1
  setup_teardown
  rbdc rm --no-progress "$POOL/$STATIC_IMAGE" >/dev/null 2>&1 || true
  local left
  left=$(grep -cF "$KUBELET_DIR/p" /proc/self/mountinfo)
  [ "$left" = 0 ] || log "  warning: $left mounts left below $KUBELET_DIR/plugins and pods"
}

# install-only: for conformance.sh, which runs its own tests against the
# release this leaves installed
if [ "${1:-}" = install-only ]; then
  run_scenario install install_driver
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
  exit
fi
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(static dynamic expand cleanup block snapshot readme setup)
T0=$SECONDS
log "Ceph mon $CEPH_MON_HOST, pool $POOL; lab $LAB_DIR; artifacts $ARTIFACTS"
run_scenario install install_driver
if [ "$FAILED" -eq 0 ]; then
  for s in "${SCENARIOS[@]}"; do
    case $s in
      static | dynamic | expand | cleanup | block | snapshot | readme | setup) run_scenario "$s" "scenario_$s" ;;
      *) die "unknown scenario $s (static, dynamic, expand, cleanup, block, snapshot, readme, setup)" ;;
    esac
  done
  run_scenario stable check_stable
fi
teardown
for c in "${FAILED_CHECKS[@]}"; do log "failed check: $c"; done
log "done in $((SECONDS - T0))s${FAILED_NAMES:+; failed: ${FAILED_NAMES[*]}}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
