#!/bin/bash
# Runs in the guest (the payload run-guest.sh starts for test-kernel.sh):
# loads rbd and nbd, starts udevd and a one-node Ceph on the guest's own
# 127.0.0.1, then runs the parts of one or more suites. Each part is a test binary built
# on the host (same path in the guest), run under a timeout with its output
# in $GUEST_OUT/PART.log and a line "PART RC SECONDS" in $GUEST_OUT/parts.txt.
#
# Environment (from test-kernel.sh): GUEST_OUT, KERNEL_SUITE (comma-separated:
# node, sanity, crypt, chaos, bench, smoke), KERNEL_BIN (the host-built binaries), RBDCSI_REPO,
# KERNEL_RUN (a -test.run pattern, may be empty), KERNEL_MAPPERS,
# KERNEL_SANITY_MAPPERS, KERNEL_CRYPT_MAPPERS, KERNEL_CHAOS_RUN,
# KERNEL_TWONODE_ROUNDS, KERNEL_SANITY_IDEMPOTENT and KERNEL_SLOW (timeout
# factor: every command is 5-10x slower under emulation). Their defaults
# live in test-kernel.sh alone, which always passes them.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
: "${GUEST_OUT:?}" "${KERNEL_SUITE:?}" "${KERNEL_BIN:?}" "${RBDCSI_REPO:?}" "${KERNEL_RUN?}"
: "${KERNEL_MAPPERS:?}" "${KERNEL_SANITY_MAPPERS:?}" "${KERNEL_CRYPT_MAPPERS:?}" "${KERNEL_CHAOS_RUN:?}"
: "${KERNEL_TWONODE_ROUNDS:?}" "${KERNEL_SANITY_IDEMPOTENT:?}" "${KERNEL_SLOW:?}"
MAPPERS=$KERNEL_MAPPERS
SLOW=$KERNEL_SLOW
T0=$SECONDS
say() { echo "[guest $((SECONDS - T0))s] $*"; }

# part NAME TIMEOUT_SEC ENV... -- CMD...: one timed part of the suite
part() {
  local name=$1 limit=$2 env=() t=$SECONDS rc
  shift 2
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  say "part $name: start (timeout ${limit}s)"
  (cd "$RBDCSI_REPO" && env "${env[@]}" timeout --kill-after=30 "$limit" "$@") >"$GUEST_OUT/$name.log" 2>&1
  rc=$?
  echo "$name $rc $((SECONDS - t))" >>"$GUEST_OUT/parts.txt"
  say "part $name: exit $rc in $((SECONDS - t))s ($(grep -cE '^[[:space:]]*--- PASS' "$GUEST_OUT/$name.log") passed, $(grep -cE '^[[:space:]]*--- FAIL' "$GUEST_OUT/$name.log") failed)"
  return 0
}

# go test binaries: verbose, bounded below the part's own timeout
gotest() { # gotest BINARY TIMEOUT_SEC [ARGS...]
  local bin=$1 limit=$2
  shift 2
  echo "$KERNEL_BIN/$bin" -test.v -test.count=1 -test.timeout "$((limit - 60))s" ${KERNEL_RUN:+-test.run "$KERNEL_RUN"} "$@"
}

setup_kernel() {
  modprobe rbd && modprobe nbd nbds_max=16 || { say "modprobe rbd/nbd failed"; return 1; }
  modprobe fuse 2>/dev/null # the mapper package's real-Ceph tests check /dev/fuse
  # rbd map (the by-hand steps of the bench) waits for udev's event
  /lib/systemd/systemd-udevd --daemon --resolve-names=never >/dev/null 2>&1 &&
    udevadm trigger --action=add >/dev/null 2>&1 && udevadm settle -t 60
  say "kernel $(uname -r): rbd and nbd loaded, supported_features $(cat /sys/bus/rbd/supported_features)"
}

# setup_ceph MGR: one cluster for every suite of this guest. The mgr takes
# minutes under emulation: it starts in the background and only the suites
# that need it (sanity: GetCapacity reads pool usage the mgr reports) wait.
setup_ceph() {
  local mgr=$1 t=$SECONDS
  export CEPH_DIR=/run/ceph
  CEPH_IP=127.0.0.1 CEPH_MGR=$mgr CEPH_MGR_WAIT=0 CEPH_MON_WAIT=$((30 * SLOW)) CEPH_OSD_GB=${KERNEL_OSD_GB:-3} CEPH_DATA_POOL=0 \
    timeout $((60 * SLOW)) "$RBDCSI_REPO/e2e/ceph/up.sh" >"$GUEST_OUT/ceph-up.log" 2>&1 ||
    { say "ceph up failed"; tail -n 20 "$GUEST_OUT/ceph-up.log"; return 1; }
  # shellcheck source=/dev/null
  . "$CEPH_DIR/env"
  export RBDCSI_TEST_CEPH=1 RBDCSI_CEPH_SCRIPTS=$RBDCSI_REPO/e2e/ceph
  echo "ceph-up $((SECONDS - t))" >>"$GUEST_OUT/parts.txt"
  say "ceph up in $((SECONDS - t))s (mgr=$mgr)"
}

# wait_mgr: until the mgr is active and the monitor's usage report lists
# the pool (what GetCapacity reads)
wait_mgr() {
  local t=$SECONDS deadline=$((SECONDS + 90 * SLOW))
  until timeout 60 ceph df -f json 2>/dev/null | grep -q "\"name\":\"$CEPH_POOL\""; do
    [ "$SECONDS" -lt "$deadline" ] || { say "the mgr did not report pool usage within $((90 * SLOW))s"; return 1; }
    sleep 5
  done
  echo "mgr-wait $((SECONDS - t))" >>"$GUEST_OUT/parts.txt"
  say "mgr reports pool usage (waited $((SECONDS - t))s here)"
}

teardown() {
  rbd showmapped 2>/dev/null | tail -n +2 >"$GUEST_OUT/left-krbd.txt"
  rbd-nbd list-mapped 2>/dev/null | tail -n +2 >"$GUEST_OUT/left-nbd.txt"
  [ -s "$GUEST_OUT/left-krbd.txt" ] && say "krbd mappings left: $(cat "$GUEST_OUT/left-krbd.txt")"
  [ -s "$GUEST_OUT/left-nbd.txt" ] && say "rbd-nbd mappings left: $(cat "$GUEST_OUT/left-nbd.txt")"
  [ -n "${CEPH_DIR:-}" ] && "$RBDCSI_REPO/e2e/ceph/down.sh" >/dev/null 2>&1
  free -m >"$GUEST_OUT/free.txt"
}

suite_smoke() {
  part smoke-map $((30 * SLOW)) -- bash -c 'rbd create kube/s --size 64M --image-feature layering && d=$(rbd map kube/s) && echo "mapped $d" && ls /sys/bus/rbd/devices && rbd unmap "$d"'
}

# facts: what the real kernel and tools answer where the unit tests use fakes
suite_facts() {
  part facts $((60 * SLOW)) -- bash "$(dirname "${BASH_SOURCE[0]}")/kernel-facts.sh"
}

suite_node() {
  local m
  part mapper-kernel $((120 * SLOW)) -- $(gotest mapper.test $((120 * SLOW)) -test.run 'TestRealKRBD|TestRealNBD')
  for m in $MAPPERS; do
    part "node-$m" $((300 * SLOW)) RBDCSI_E2E_MAPPER="$m" RBD_CSI_BIN="$KERNEL_BIN/rbd-csi" -- $(gotest node.test $((300 * SLOW)))
  done
}

suite_sanity() {
  wait_mgr || return 1
  local m a
  for m in $KERNEL_SANITY_MAPPERS; do
    for a in mount block; do
      part "sanity-$a-$m" $((240 * SLOW)) RBDCSI_E2E_MAPPER="$m" RBDCSI_SANITY_IDEMPOTENT_COUNT="$KERNEL_SANITY_IDEMPOTENT" -- \
        $(gotest "sanity-$a.test" $((240 * SLOW)))
    done
  done
}

suite_chaos() {
  local m run=()
  # KERNEL_RUN (in gotest) narrows the node scenarios; a second -test.run
  # here would override it. KERNEL_CHAOS_RUN picks scenarios of this suite
  # alone (CI: node-partitioned only).
  [ -n "$KERNEL_RUN" ] || run=(-test.run "$KERNEL_CHAOS_RUN")
  for m in $MAPPERS; do
    part "chaos-$m" $((300 * SLOW)) RBDCSI_E2E_MAPPER="$m" RBDCSI_CHAOS=1 RBDCSI_CHAOS_FIGURES="$GUEST_OUT/chaos.figures" RBD_CSI_BIN="$KERNEL_BIN/rbd-csi" \
      RBDCSI_TWONODE_ROUNDS="$KERNEL_TWONODE_ROUNDS" -- \
      $(gotest chaos.test $((300 * SLOW)) "${run[@]}")
  done
}

# crypt: encrypted volumes (LUKS2 on dm-crypt, which only the guest's
# kernel has): the e2e/node encryption tests, then csi-sanity mount and
# block with an encrypted StorageClass, per mapper
suite_crypt() {
  modprobe dm_crypt || { say "modprobe dm_crypt failed"; return 1; }
  wait_mgr || return 1
  local m a run=()
  # as in suite_chaos: KERNEL_RUN, when set, picks the tests
  [ -n "$KERNEL_RUN" ] || run=(-test.run TestEncrypted)
  for m in $KERNEL_CRYPT_MAPPERS; do
    part "crypt-node-$m" $((300 * SLOW)) RBDCSI_E2E_MAPPER="$m" RBDCSI_E2E_CRYPT=1 RBD_CSI_BIN="$KERNEL_BIN/rbd-csi" -- \
      $(gotest node.test $((300 * SLOW)) "${run[@]}")
    for a in mount block; do
      part "crypt-sanity-$a-$m" $((240 * SLOW)) RBDCSI_E2E_MAPPER="$m" RBDCSI_SANITY_ENCRYPTED=1 RBDCSI_SANITY_IDEMPOTENT_COUNT="$KERNEL_SANITY_IDEMPOTENT" -- \
        $(gotest "sanity-$a.test" $((240 * SLOW)))
    done
  done
}

# bench: the node phases of e2e/bench with krbd and rbd-nbd, driver against
# the same steps by hand, and throughput through each (fio)
suite_bench() {
  local m=${MAPPERS// /,}
  part bench-node $((300 * SLOW)) -- "$KERNEL_BIN/bench" -node-only -node-mappers "$m" \
    -node-count "${KERNEL_BENCH_COUNT:-3}" -io-mib "${KERNEL_BENCH_MIB:-64}" -driver-log "$GUEST_OUT/bench-driver.log"
  cp "$GUEST_OUT/bench-node.log" "$GUEST_OUT/bench.figures"
}

say "suites $KERNEL_SUITE"
: >"$GUEST_OUT/parts.txt"
setup_kernel || exit 1
mgr=0
case ",$KERNEL_SUITE," in *,sanity,* | *,crypt,*) mgr=1 ;; esac
rc=0
if setup_ceph "$mgr"; then
  for suite in ${KERNEL_SUITE//,/ }; do
    "suite_$suite" || rc=1
  done
else
  rc=1
fi
teardown
say "suites $KERNEL_SUITE done"
exit "$rc"
