#!/bin/bash
# What `make chaos` runs: the fault-injection suite (e2e/chaos) against a
# real Ceph, then one FIGURE line per scenario.
#
# Cluster: the one named by CEPH_MON_HOST/CEPH_ADMIN_KEY (with CEPH_DIR, so
# that e2e/ceph/mon.sh can stop its monitor), else a throw-away one started
# by e2e/ceph/with-cluster.sh. The suite stops the monitor for 30 s: never
# point it at a cluster that other tests use at the same time.
#
# Settings: GO_TAGS (default pacific), CHAOS_TIMEOUT (go test -timeout,
# default 20m), RBD_CSI_BIN (the driver binary; built by the tests if unset).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

if [ -z "${CEPH_MON_HOST:-}" ] || [ -z "${CEPH_ADMIN_KEY:-}" ]; then
  exec "$HERE/ceph/with-cluster.sh" "$0" "$@"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbdcsi-chaos.XXXXXX")
export RBDCSI_CHAOS=1 RBDCSI_CHAOS_FIGURES=$WORK/figures RBDCSI_FAILED_LOGS=${RBDCSI_FAILED_LOGS:-$WORK/failed-logs}
: >"$RBDCSI_CHAOS_FIGURES"
rc=0
go test -tags "${GO_TAGS:-pacific}" -count=1 -v -timeout "${CHAOS_TIMEOUT:-20m}" ./e2e/chaos/ 2>&1 | tee "$WORK/go-test.log" || rc=$?

echo
echo "==== chaos figures (go test log: $WORK/go-test.log)"
cat "$RBDCSI_CHAOS_FIGURES"
grep -E '^\s+--- SKIP|^\s+\S+_test.go:[0-9]+: .*(fault-injection suite|run as root|CEPH_DIR)' "$WORK/go-test.log" || true
scenarios=$(grep -c '^FIGURE ' "$RBDCSI_CHAOS_FIGURES" || true)
passed=$(grep -c '^--- PASS' "$WORK/go-test.log" || true)
failed=$(grep -c '^--- FAIL' "$WORK/go-test.log" || true)
echo "chaos: $scenarios scenarios with figures, $passed passed, $failed failed"
[ "$rc" -eq 0 ] || exit "$rc"
[ "$scenarios" -ge 7 ] || { echo "chaos: expected 7 figures (the node-container-restart ones are rbd-nbd only); a scenario was skipped (reason above)" >&2; exit 1; }
