#!/bin/bash
# What `make test-kernel` runs: the node path on a real kernel. Installs
# what it needs, builds the driver and the test binaries on this machine,
# then boots one QEMU guest (Debian's stock kernel, which has rbd.ko and
# nbd.ko) per suite; each guest starts its own one-node Ceph and runs the
# suite with mounter krbd and with mounter rbd-nbd (see README.md).
#
# Settings (environment):
#   KERNEL_SUITES   guests to boot, each a comma-separated list of suites
#                   sharing one guest and one Ceph (default "facts,node,sanity,crypt chaos";
#                   suites: facts, node, sanity, crypt, chaos, bench, smoke)
#   KERNEL_MAPPERS  default "krbd rbd-nbd"
#   KERNEL_SANITY_MAPPERS  mappers of the sanity suite (default KERNEL_MAPPERS)
#   KERNEL_CRYPT_MAPPERS  mappers of the crypt suite (default KERNEL_MAPPERS)
#   KERNEL_RUN      a -test.run pattern for the suites' test binaries
#   KERNEL_CHAOS_RUN  the chaos suite's scenarios (default
#                   TestChaosNode|TestChaosTwoNodes: all node scenarios and
#                   the two-node race)
#   KERNEL_TWONODE_ROUNDS  rounds of the two-node race (default 100)
#   KERNEL_BENCH_COUNT  volumes per side in the bench suite's node phases
#                   (default 3); KERNEL_BENCH_MIB  MiB per fio phase (default
#                   64; 0 skips the throughput phases)
#   KERNEL_SANITY_IDEMPOTENT  csi-sanity's repeats of idempotent calls
#                   (default 10, as in make test; CI uses 2)
#   KERNEL_BASE     work directory (default /tmp/rbdcsi-kernel): binaries,
#                   initramfs, one results directory per guest under out/
#   KERNEL_MEM      guest memory in MiB (default 2560)
#   KERNEL_SLOW     timeout factor inside the guest (default 8)
#   KERNEL_GUEST_TIMEOUT  seconds one guest may run (default 5400)
#   KERNEL_ACCEL    auto (default), tcg or kvm: see run-guest.sh
#   GO_TAGS         build tags (default pacific)
# Prints each part's result and a "N passed, N failed, N skipped" line;
# exits non-zero when a part fails, a guest does not report, or no test
# passed. When qemu cannot run here it says why and fails.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SUITES=${KERNEL_SUITES:-facts,node,sanity,crypt chaos}
MAPPERS=${KERNEL_MAPPERS:-krbd rbd-nbd}
BASE=${KERNEL_BASE:-/tmp/rbdcsi-kernel}
GO_TAGS=${GO_TAGS:-pacific}
export KERNEL_BASE=$BASE
T0=$SECONDS

log() { echo "[test-kernel $((SECONDS - T0))s] $*"; }
die() { echo "[test-kernel] error: $*" >&2; exit 1; }
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"
[ "$(id -u)" -eq 0 ] || die "run as root: the guest's root is this machine's / shared over 9p, and the packages may need installing"

log "packages"
"$ROOT/e2e/ceph/install.sh" qemu-system-x86 linux-image-amd64 busybox-static fio
"$HERE/run-guest.sh" --check || die "qemu cannot run a guest here (see above); make test-kernel needs one"

log "build (driver and test binaries, on this machine; the guest runs them from the shared root)"
BIN=$BASE/bin
mkdir -p "$BIN" "$BASE/out"
t=$SECONDS
(
  cd "$ROOT"
  go build -tags "$GO_TAGS" -trimpath -o "$BIN/rbd-csi" ./cmd/rbd-csi
  go test -tags "$GO_TAGS" -c -o "$BIN/node.test" ./e2e/node
  go test -tags "$GO_TAGS" -c -o "$BIN/sanity-mount.test" ./e2e/sanity/mount
  go test -tags "$GO_TAGS" -c -o "$BIN/sanity-block.test" ./e2e/sanity/block
  go test -tags "$GO_TAGS" -c -o "$BIN/chaos.test" ./e2e/chaos
  go test -tags "$GO_TAGS" -c -o "$BIN/mapper.test" ./internal/node/mapper
  go build -tags "$GO_TAGS" -o "$BIN/bench" ./e2e/bench
)
log "built in $((SECONDS - t))s"

STAMP=$(date +%Y%m%d-%H%M%S)
guest_failed=()
RUNS=()
for suite in $SUITES; do
  run=$BASE/out/${suite//,/+}-$STAMP
  RUNS+=("$run")
  log "suite $suite: booting a guest ($run)"
  rc=0
  "$HERE/run-guest.sh" --rundir "$run" --payload "$run/recipe/guest-suite.sh" \
    --timeout "${KERNEL_GUEST_TIMEOUT:-5400}" --mem "${KERNEL_MEM:-2560}" \
    --env KERNEL_SUITE="$suite" --env KERNEL_BIN="$BIN" --env RBDCSI_REPO="$ROOT" \
    --env KERNEL_MAPPERS="$MAPPERS" --env KERNEL_SLOW="${KERNEL_SLOW:-8}" \
    --env KERNEL_SANITY_MAPPERS="${KERNEL_SANITY_MAPPERS:-$MAPPERS}" \
    --env KERNEL_CRYPT_MAPPERS="${KERNEL_CRYPT_MAPPERS:-$MAPPERS}" \
    --env KERNEL_CHAOS_RUN="${KERNEL_CHAOS_RUN:-TestChaosNode|TestChaosTwoNodes}" \
    --env KERNEL_TWONODE_ROUNDS="${KERNEL_TWONODE_ROUNDS:-100}" \
    --env KERNEL_BENCH_COUNT="${KERNEL_BENCH_COUNT:-3}" --env KERNEL_BENCH_MIB="${KERNEL_BENCH_MIB:-64}" \
    --env KERNEL_RUN="${KERNEL_RUN:-}" --env KERNEL_SANITY_IDEMPOTENT="${KERNEL_SANITY_IDEMPOTENT:-10}" || rc=$?
  [ "$rc" -eq 0 ] || guest_failed+=("$suite (exit $rc)")
  if [ -s "$run/parts.txt" ]; then
    # "PART EXIT SECONDS" per part; "STEP SECONDS" for set-up steps
    awk -v s="$suite" 'NF == 3 {printf "  %s: %-22s exit %s in %ss\n", s, $1, $2, $3} NF == 2 {printf "  %s: %-22s %ss\n", s, $1, $2}' "$run/parts.txt"
    while read -r part prc _; do
      guest_failed+=("$suite/$part (exit $prc)")
    done < <(awk 'NF == 3 && $2 != 0' "$run/parts.txt")
  fi
  for f in "$run"/*.figures; do [ -e "$f" ] && cat "$f"; done
done

echo
echo "==== kernel test summary (results: $BASE/out/*-$STAMP)"
logs=()
for run in "${RUNS[@]}"; do
  for l in "$run"/node-*.log "$run"/sanity-*.log "$run"/chaos-*.log "$run"/mapper-*.log "$run"/crypt-*.log; do
    [ -e "$l" ] && logs+=("$l")
  done
done
summary="0 passed, 0 failed, 0 skipped"
[ ${#logs[@]} -eq 0 ] || summary=$("$ROOT/e2e/test-summary.sh" "${logs[@]}")
echo "$summary"
log "done"
if [ ${#guest_failed[@]} -gt 0 ]; then
  echo "[test-kernel] failed: ${guest_failed[*]}" >&2
  exit 1
fi
passed=${summary%% passed,*}
if [ "$passed" -eq 0 ] && [ -n "$(printf '%s\n' "${RUNS[@]}" | grep -vE '/(smoke|bench)-')" ]; then
  echo "[test-kernel] no test passed" >&2
  exit 1
fi
