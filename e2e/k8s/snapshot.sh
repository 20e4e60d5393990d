# shellcheck shell=bash
# Sourced by e2e.sh: scenario 6 (snapshot), VolumeSnapshots and clones through the
# Kubernetes objects users create: the snapshot CRDs and snapshot-controller
# of external-snapshotter (built by build-tools.sh), the chart's
# csi-snapshotter sidecar and a VolumeSnapshotClass from the chart values.

SNAP_CLASS=rbd-snapshot
SNAP_SRC=snap-src-pvc

# install_snapshot_controller: external-snapshotter's snapshot-controller
# (test-only manifests), which most distributions ship and the lab lacks.
# install_driver has applied the snapshot CRDs before.
install_snapshot_controller() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: e2e-snapshot-controller, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-snapshot-controller}
rules:
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [persistentvolumeclaims]
    verbs: [get, list, watch, update, patch]
  - apiGroups: [""]
    resources: [events]
    verbs: [list, watch, create, update, patch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
  - apiGroups: [snapshot.storage.k8s.io]
    resources: [volumesnapshotclasses]
    verbs: [get, list, watch]
  - apiGroups: [snapshot.storage.k8s.io]
    resources: [volumesnapshotcontents]
    verbs: [create, get, list, watch, update, delete, patch]
  - apiGroups: [snapshot.storage.k8s.io]
    resources: [volumesnapshotcontents/status]
    verbs: [patch]
  - apiGroups: [snapshot.storage.k8s.io]
    resources: [volumesnapshots]
    verbs: [get, list, watch, update, patch, delete]
  - apiGroups: [snapshot.storage.k8s.io]
    resources: [volumesnapshots/status]
    verbs: [update, patch]
  - apiGroups: [groupsnapshot.storage.k8s.io]
    resources: [volumegroupsnapshotclasses, volumegroupsnapshotcontents, volumegroupsnapshots]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-snapshot-controller}
subjects: [{kind: ServiceAccount, name: e2e-snapshot-controller, namespace: kube-system}]
roleRef: {kind: ClusterRole, name: e2e-snapshot-controller, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: e2e-snapshot-controller, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: e2e-snapshot-controller}}
  template:
    metadata: {labels: {app: e2e-snapshot-controller}}
    spec:
      serviceAccountName: e2e-snapshot-controller
      hostNetwork: true
      containers:
        - name: snapshot-controller
          image: local.test/snapshot-controller:$SNAPSHOTTER_VERSION
          imagePullPolicy: Never
          args: [--v=4, --leader-election=false]
          env:
            # no kube-proxy in the lab: reach the API server directly
            - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}
            - {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
EOF
  controller_ready() { [ "$(kc get deploy -n kube-system e2e-snapshot-controller -o jsonpath='{.status.readyReplicas}' 2>/dev/null)" = 1 ]; }
  until_true "$TIMEOUT" "snapshot-controller Ready" controller_ready
}

snapshot_ready() { [ "$(kc get volumesnapshot -n "$TNS" "$1" -o jsonpath='{.status.readyToUse}' 2>/dev/null)" = true ]; }

# pvc_from KIND NAME SOURCE SIZE: a claim of the legacy class restored from
# (VolumeSnapshot) or cloned from (PersistentVolumeClaim) SOURCE
pvc_from() {
  local group=""
  [ "$1" = VolumeSnapshot ] && group="apiGroup: snapshot.storage.k8s.io, "
  claim "$2" rbd-legacy "$4" "dataSource: {${group}kind: $1, name: $3}"
}

scenario_snapshot() {
  claim "$SNAP_SRC" rbd-legacy 128Mi
  until_true "$TIMEOUT" "PVC $SNAP_SRC Bound" pvc_is_bound "$SNAP_SRC"
  busybox_pod snap-writer "$SNAP_SRC" fs 'dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null && sha256sum /data/blob > /data/blob.sha256 && sync' >/dev/null
  until_true "$TIMEOUT" "pod snap-writer Running, 8 MiB written" pod_ready snap-writer
  local want
  want=$(pod_exec snap-writer 'cat /data/blob.sha256')
  kc apply -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap1, namespace: $TNS}
spec:
  volumeSnapshotClassName: $SNAP_CLASS
  source: {persistentVolumeClaimName: $SNAP_SRC}
EOF
  until_true "$TIMEOUT" "VolumeSnapshot snap1 readyToUse" snapshot_ready snap1
  check "snapshot size reported ($(kc get volumesnapshot -n "$TNS" snap1 -o jsonpath='{.status.restoreSize}'))" \
    [ -n "$(kc get volumesnapshot -n "$TNS" snap1 -o jsonpath='{.status.restoreSize}')" ]
  # written after the snapshot: must not show up in the restore
  pod_exec snap-writer 'echo after > /data/after-snapshot && sync'

  pvc_from VolumeSnapshot snap-restore snap1 160Mi
  pvc_from PersistentVolumeClaim snap-clone "$SNAP_SRC" 128Mi
  until_true "$TIMEOUT" "PVC snap-restore (from snap1, 160Mi) Bound" pvc_is_bound snap-restore
  until_true "$TIMEOUT" "PVC snap-clone (from $SNAP_SRC) Bound" pvc_is_bound snap-clone
  kc delete pod -n "$TNS" snap-writer --wait=true --timeout="${TIMEOUT}s" >/dev/null

  busybox_pod snap-restore-app snap-restore fs 'true' >/dev/null
  busybox_pod snap-clone-app snap-clone fs 'true' >/dev/null
  until_true "$TIMEOUT" "pod on the restored volume Running" pod_ready snap-restore-app
  until_true "$TIMEOUT" "pod on the cloned volume Running" pod_ready snap-clone-app
  check "restored volume has the snapshot's data (sha256 of 8 MiB)" \
    [ "$(pod_exec snap-restore-app 'cd / && sha256sum /data/blob')" = "$want" ]
  check "restored volume lacks the file written after the snapshot" pod_exec snap-restore-app '! test -e /data/after-snapshot'
  check "restored filesystem grown to the larger claim (> 140 MiB)" [ "$(data_mib snap-restore-app)" -gt 140 ]
  check "cloned volume has the source's data (sha256 of 8 MiB)" \
    [ "$(pod_exec snap-clone-app 'cd / && sha256sum /data/blob')" = "$want" ]
  check "cloned volume has the file written after the snapshot" pod_exec snap-clone-app 'test -e /data/after-snapshot'

  # the source goes first: its restores and clones must keep working
  local src_pv
  src_pv=$(pv_of "$SNAP_SRC")
  kc delete pvc -n "$TNS" "$SNAP_SRC" --wait=true --timeout="${TIMEOUT}s" >/dev/null
  kc delete volumesnapshot -n "$TNS" snap1 --wait=true --timeout="${TIMEOUT}s" >/dev/null
  until_true "$TIMEOUT" "source PV $src_pv deleted" gone pv "$src_pv"
  # the pod read the blob before: drop the host's page cache (the e2e runs as
  # root there) so that the read goes through the clone chain to RADOS
  sync
  echo 3 >/proc/sys/vm/drop_caches
  check "restored volume still has the snapshot's data after its source and snapshot were deleted" \
    [ "$(pod_exec snap-restore-app 'cd / && sha256sum /data/blob')" = "$want" ]
  check "restored volume still writable after its source and snapshot were deleted" \
    pod_exec snap-restore-app 'dd if=/dev/zero of=/data/more bs=4k count=16 conv=fsync 2>/dev/null'
  local pvs=() p
  for p in snap-restore snap-clone; do pvs+=("$(pv_of "$p")"); done
  kc delete pod -n "$TNS" snap-restore-app snap-clone-app --wait=true --timeout="${TIMEOUT}s" >/dev/null
  kc delete pvc -n "$TNS" snap-restore snap-clone --wait=true --timeout="${TIMEOUT}s" >/dev/null
  for p in "${pvs[@]}"; do until_true "$TIMEOUT" "PV $p deleted" gone pv "$p"; done
  no_snapshot_contents() { [ -z "$(kc get volumesnapshotcontents -o name 2>/dev/null)" ]; }
  until_true "$TIMEOUT" "no VolumeSnapshotContent left" no_snapshot_contents
}
