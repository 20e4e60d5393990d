#!/bin/bash
# What `make test` runs: go test over the module against a real Ceph.
#
# Cluster: when CEPH_MON_HOST and CEPH_ADMIN_KEY are set, that cluster is used
# as is. Otherwise a throw-away one is started with e2e/ceph/up.sh in a fresh
# directory (missing packages are installed first when running as root) and
# always stopped at exit. RBDCSI_TEST_CEPH=0 runs without any cluster (tests
# that need one skip).
#
# Exported to the tests: CEPH_DIR CEPH_CONF CEPH_KEYRING CEPH_ADMIN_KEY
#   CEPH_MON_HOST CEPH_FSID CEPH_POOL CEPH_DATA_POOL_NAME, RBDCSI_TEST_CEPH=1
#   when a cluster is available, RBDCSI_CEPH_SCRIPTS (this dir's ceph/, for
#   mon.sh fault injection).
#
# Settings (environment):
#   TEST_PKGS        packages to test (default ./...)
#   GO_TEST_ARGS     extra go test arguments, split on spaces, no quoting
#                    (e.g. "-run TestFoo|TestBar -race")
#   GO_TEST_TIMEOUT  go test -timeout (default 40m)
#   GO_TAGS          build tags (default pacific: go-ceph for Ceph 16)
#   TEST_LOG         where the go test output goes (default: a new temp dir)
#   RBDCSI_CEPH_DIR  directory for the throw-away cluster (default: mktemp in /tmp)
#   CEPH_IP          its loopback address (default auto: a free 127.0.0.N)
#   other up.sh settings (CEPH_STORE, CEPH_OSD_GB, ...) pass through
#
# Prints a summary ("N passed, N failed, N skipped", failing tests, skip
# reasons). Exits non-zero when go test fails or when no test passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CEPH_SCRIPTS=$HERE/ceph
TEST_PKGS=${TEST_PKGS:-./...}
GO_TEST_ARGS=${GO_TEST_ARGS:-}
GO_TEST_TIMEOUT=${GO_TEST_TIMEOUT:-40m}
GO_TAGS=${GO_TAGS:-pacific}

log() { echo "[run-tests] $*"; }
die() { echo "[run-tests] error: $*" >&2; exit 1; }

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbdcsi-test.XXXXXX")
TEST_LOG=${TEST_LOG:-$WORK/go-test.log}
mkdir -p "$(dirname "$TEST_LOG")"

# --- the Ceph cluster ---------------------------------------------------------
OWN_CLUSTER=
cleanup() {
  local rc=$?
  if [ -n "$OWN_CLUSTER" ]; then
    if [ "$rc" -ne 0 ] && [ -d "$OWN_CLUSTER/log" ]; then
      cp -r "$OWN_CLUSTER/log" "$WORK/ceph-log" 2>/dev/null &&
        log "ceph logs saved in $WORK/ceph-log"
    fi
    CEPH_DIR=$OWN_CLUSTER "$CEPH_SCRIPTS/down.sh" | tail -n 1
  fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# missing_deps: prints what a local cluster and the cgo build need but lacks
missing_deps() {
  local b PATH=$PATH:/usr/sbin:/sbin
  for b in ceph ceph-mon ceph-osd ceph-mgr ceph-authtool monmaptool rbd rbd-fuse gcc mkfs.ext4 mkfs.xfs losetup; do
    command -v "$b" >/dev/null || echo "$b"
  done
  [ -e /usr/include/rados/librados.h ] || echo librados-dev
  [ -e /usr/include/rbd/librbd.h ] || echo librbd-dev
}

if [ -n "${CEPH_MON_HOST:-}" ] && [ -n "${CEPH_ADMIN_KEY:-}" ]; then
  export CEPH_POOL=${CEPH_POOL:-kube}
  export RBDCSI_TEST_CEPH=1
  log "using the Ceph cluster at $CEPH_MON_HOST (pool $CEPH_POOL)"
elif [ "${RBDCSI_TEST_CEPH:-}" = 0 ]; then
  log "RBDCSI_TEST_CEPH=0: no Ceph cluster, tests that need one will skip"
else
  mapfile -t missing < <(missing_deps)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] ||
      die "missing ${missing[*]}; install them with: sudo $CEPH_SCRIPTS/install.sh (or set CEPH_MON_HOST and CEPH_ADMIN_KEY to use a running cluster)"
    log "missing ${missing[*]}: installing"
    "$CEPH_SCRIPTS/install.sh"
  fi
  OWN_CLUSTER=${RBDCSI_CEPH_DIR:-$(mktemp -d /tmp/rbdcsi.XXXXXX)}
  # an address of its own (127.0.0.N, standard ports): no fight over
  # 127.0.0.1:6789 with a developer's cluster, even while mon.sh stops the mon
  export CEPH_IP=${CEPH_IP:-auto}
  unset CEPH_CONF CEPH_KEYRING
  CEPH_DIR=$OWN_CLUSTER "$CEPH_SCRIPTS/up.sh"
  # shellcheck source=/dev/null
  . "$OWN_CLUSTER/env"
  export RBDCSI_TEST_CEPH=1
fi
export RBDCSI_CEPH_SCRIPTS=$CEPH_SCRIPTS

# --- go test ------------------------------------------------------------------
cd "$ROOT"
# shellcheck disable=SC2206 # both are space-separated lists on purpose
args=(-tags "$GO_TAGS" -count=1 -v -timeout "$GO_TEST_TIMEOUT" $GO_TEST_ARGS $TEST_PKGS)
log "go test ${args[*]}   (output: $TEST_LOG)"
# loop devices and mounts, to report what the tests left behind
snapshot() {
  { losetup -n -l -O NAME,BACK-FILE 2>/dev/null; findmnt -rn -o TARGET,FSTYPE 2>/dev/null; } | sort
}
snapshot >"$WORK/before"
set +e
go test "${args[@]}" 2>&1 | tee "$TEST_LOG"
rc=${PIPESTATUS[0]}
set -e
snapshot >"$WORK/after"

# --- summary -----------------------------------------------------------------
summary=$("$HERE/test-summary.sh" "$TEST_LOG")
echo
echo "==== test summary (full output: $TEST_LOG)"
echo "$summary"
passed=${summary%% passed,*}
leftovers=$(comm -13 "$WORK/before" "$WORK/after")
if [ -n "$leftovers" ]; then
  echo "loop devices and mounts that appeared during the tests and are still there:"
  while IFS= read -r line; do echo "  $line"; done <<<"$leftovers"
fi

if [ "$rc" -ne 0 ]; then
  log "go test failed (exit $rc)"
  exit "$rc"
fi
if [ "$passed" -eq 0 ]; then
  log "no test passed"
  exit 1
fi
log "ok"
