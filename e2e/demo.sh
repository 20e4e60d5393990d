#!/bin/bash
# What `make demo` runs: a local Ceph (started here unless CEPH_MON_HOST and
# CEPH_ADMIN_KEY name one), the driver in --mode=all with the fuse mapper
# (works on kernels without rbd), and one volume walked through its life with
# csictl, printing each step and its time. Everything is cleaned up at exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ -z "${RBDCSI_DEMO_INNER:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it mounts a filesystem and attaches a loop device)" >&2; exit 1; }
  export RBDCSI_DEMO_INNER=1
  exec "$ROOT/e2e/ceph/with-cluster.sh" "$0" "$@"
fi

BIN=$ROOT/bin
WORK=$(mktemp -d /tmp/rbdcsi-demo.XXXXXX)
SOCK=$WORK/csi.sock
DRIVER_PID=
cleanup() {
  set +e
  if [ -n "${VOL_ID:-}" ]; then
    csi unpublish "$VOL_ID" --target-path "$WORK/pod" >/dev/null 2>&1
    csi unstage "$VOL_ID" --staging-path "$WORK/staging" >/dev/null 2>&1
    csi delete "$VOL_ID" >/dev/null 2>&1
  fi
  [ -n "$DRIVER_PID" ] && kill "$DRIVER_PID" 2>/dev/null && wait "$DRIVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# The key reaches csictl through the environment, never the command line.
CSI_SECRETS=$(printf '{"userID":"admin","userKey":"%s"}' "$CEPH_ADMIN_KEY")
export CSI_SECRETS
csi() { "$BIN/csictl" --endpoint "unix://$SOCK" --timeout 60s "$@"; }

T0=${EPOCHREALTIME/./}
LAST=$T0
step() {
  local now=${EPOCHREALTIME/./}
  printf '[%7.3fs | +%6.0fms] %s\n' "$(( (now - T0) ))e-6" "$(( (now - LAST) / 1000 ))" "$*"
  LAST=$now
}
# run DESCRIPTION CMD...: run CMD quietly, then print the step and its time
run() { local what=$1; shift; "$@" >/dev/null; step "$what"; }

echo "== rbd-csi demo: Ceph at $CEPH_MON_HOST, pool $CEPH_POOL, work dir $WORK"
printf '[{"clusterID":"demo","monitors":["%s"]}]\n' "$CEPH_MON_HOST" >"$WORK/clusters.json"
"$BIN/rbd-csi" --endpoint "unix://$SOCK" --mode=all --nodeid=demo-node --mapper=fuse \
  --cluster-config="$WORK/clusters.json" --state-dir="$WORK/state" --keyring-dir="$WORK/keyrings" --instance-id=demo >"$WORK/driver.log" 2>&1 &
DRIVER_PID=$!
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
step "driver started (pid $DRIVER_PID, log $WORK/driver.log)"
csi info | sed 's/^/    /'

csi --output json create demo-volume --size 1Gi --fs-type ext4 \
  --param clusterID=demo --param pool="$CEPH_POOL" >"$WORK/volume.json"
VOL_ID=$(sed -n 's/.*"volume_id": *"\([^"]*\)".*/\1/p' "$WORK/volume.json")
step "CreateVolume: $VOL_ID"

mkdir -p "$WORK/staging"
run "NodeStageVolume: image mapped (rbd-fuse + loop), formatted ext4, mounted at $WORK/staging" \
  csi stage "$VOL_ID" --staging-path "$WORK/staging" --fs-type ext4 --context-file "$WORK/volume.json"
run "NodePublishVolume: bind-mounted at $WORK/pod" \
  csi publish "$VOL_ID" --staging-path "$WORK/staging" --target-path "$WORK/pod" --fs-type ext4 --context-file "$WORK/volume.json"

echo "hello from rbd-csi at $(date -u +%FT%TZ)" >"$WORK/pod/hello.txt"
sync "$WORK/pod/hello.txt"
WANT=$(sha256sum <"$WORK/pod/hello.txt")
step "wrote $WORK/pod/hello.txt: $(cat "$WORK/pod/hello.txt")"

run "NodeUnpublishVolume" csi unpublish "$VOL_ID" --target-path "$WORK/pod"
run "NodeUnstageVolume: unmounted and unmapped" csi unstage "$VOL_ID" --staging-path "$WORK/staging"
run "NodeStageVolume again: a fresh mapping reads from Ceph" \
  csi stage "$VOL_ID" --staging-path "$WORK/staging" --fs-type ext4 --context-file "$WORK/volume.json"
run "NodePublishVolume again" \
  csi publish "$VOL_ID" --staging-path "$WORK/staging" --target-path "$WORK/pod" --fs-type ext4 --context-file "$WORK/volume.json"
GOT=$(sha256sum <"$WORK/pod/hello.txt")
[ "$GOT" = "$WANT" ] || { echo "demo: data read back differs!" >&2; exit 1; }
step "read back: $(cat "$WORK/pod/hello.txt") (checksum matches)"

BEFORE=$(df -h --output=size "$WORK/pod" | tail -1 | tr -d ' ')
run "ControllerExpandVolume to 2Gi" csi expand "$VOL_ID" --size 2Gi --fs-type ext4
if csi node-expand "$VOL_ID" --path "$WORK/pod" --staging-path "$WORK/staging" --size 2Gi --fs-type ext4 >/dev/null 2>"$WORK/expand.err"; then
  step "NodeExpandVolume: filesystem grown online"
elif grep -q CAP_SYS_RESOURCE "$WORK/expand.err"; then
  # Some sandboxes withhold the capability online ext4 growth needs; the
  # driver grows the filesystem at the next stage instead, as a pod restart would.
  step "NodeExpandVolume refused: no CAP_SYS_RESOURCE here for online ext4 growth; restaging grows it offline"
  run "NodeUnpublishVolume" csi unpublish "$VOL_ID" --target-path "$WORK/pod"
  run "NodeUnstageVolume" csi unstage "$VOL_ID" --staging-path "$WORK/staging"
  run "NodeStageVolume: filesystem grown to the image before mounting" \
    csi stage "$VOL_ID" --staging-path "$WORK/staging" --fs-type ext4 --context-file "$WORK/volume.json"
  run "NodePublishVolume" \
    csi publish "$VOL_ID" --staging-path "$WORK/staging" --target-path "$WORK/pod" --fs-type ext4 --context-file "$WORK/volume.json"
else
  cat "$WORK/expand.err" >&2
  exit 1
fi
step "filesystem size $BEFORE -> $(df -h --output=size "$WORK/pod" | tail -1 | tr -d ' ')"
csi stats "$VOL_ID" --path "$WORK/pod" | sed 's/^/    /'

run "NodeUnpublishVolume" csi unpublish "$VOL_ID" --target-path "$WORK/pod"
run "NodeUnstageVolume" csi unstage "$VOL_ID" --staging-path "$WORK/staging"
run "DeleteVolume: image moved to the trash, purged in the background" csi delete "$VOL_ID"
VOL_ID=
echo "== demo done"
