#!/bin/bash
# Kubernetes' own storage conformance tests against rbd-csi in the lab: the
# External Storage testsuites of k8s.io/kubernetes test/e2e/storage, driven by
# conformance/driver.yaml, run by e2e-storage.test (build-tools.sh e2e).
# Prints ginkgo's summary, a table per testsuite and `N passed, N failed,
# N skipped`; keeps the JUnit report, the log and the table in
# $RBDCSI_CACHE/last-conformance/.
#
# usage: conformance.sh            (what run.sh conformance / make conformance run)
# Needs: the lab up with the driver installed (e2e.sh install-only) and the
# e2e images imported (images.sh e2e, then images.sh import).
# Settings (environment):
#   CONFORMANCE_SUITES  testsuites to run (default: every one-node suite, see
#                       SUITES), e.g. "provisioning volumeMode"
#   CONFORMANCE_FOCUS   a ginkgo focus regex on the spec text, instead of
#                       the testsuites' (e.g. 'volumeMode should fail')
#   CONFORMANCE_SKIP    a further ginkgo skip regex (added to SKIPS below)
#   CONFORMANCE_TIMEOUT the whole run's bound (ginkgo duration, default 3h)
#   CONFORMANCE_PROCS   parallel ginkgo processes (default 4; specs marked
#                       [Serial] run alone at the end either way)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=conformance
export KUBECONFIG=$LAB_DIR/admin.kubeconfig

BIN_DIR=$RBDCSI_CACHE/k8s-e2e-storage-$K8S_VERSION/bin
BIN=$BIN_DIR/e2e-storage.test
DRIVER_YAML=$E2E_K8S_DIR/conformance/driver.yaml
OUT=$RBDCSI_CACHE/last-conformance

# The testsuites that can run on one node, by the name ginkgo prints after
# the test pattern. Not here: disruptive (restarts the kubelet through SSH),
# the stress and performance suites (many volumes for a long time), topology
# and capacity (the driver has neither), volume-modify (no
# VolumeAttributesClass support).
SUITES=(provisioning volumes volumeIO volumeMode subPath volume-expand snapshottable
  multiVolume ephemeral fsgroupchangepolicy volumeLimits read-write-once-pod)

# Specs the one-node lab cannot run, with the reason printed before the run.
# Each entry: REGEX|REASON
SKIPS=(
  '\[Disruptive\]|needs to restart the kubelet or the node (SSH to the node)'
  '\[Feature:Windows\]|Windows nodes only'
)

[ -x "$BIN" ] && [ -x "$BIN_DIR/ginkgo" ] || die "$BIN or ginkgo missing: run build-tools.sh e2e"
[ -f "$DRIVER_YAML" ] || die "$DRIVER_YAML missing"
KUBECTL_TIMEOUT=30s kc get --raw /readyz >/dev/null 2>&1 || die "the lab's API server does not answer: run lab-up.sh"

# suite_focus SUITE...: the ginkgo focus that selects these testsuites
suite_focus() {
  local IFS='|'
  printf '\\[Testpattern: [^]]*\\] (%s) ' "$*"
}

read -r -a suites <<<"${CONFORMANCE_SUITES:-${SUITES[*]}}"
focus=${CONFORMANCE_FOCUS:-$(suite_focus "${suites[@]}")}
skip=""
for s in "${SKIPS[@]}"; do
  log "skipped: ${s%%|*}: ${s#*|}"
  skip+="${skip:+|}${s%%|*}"
done
[ -z "${CONFORMANCE_SKIP:-}" ] || skip+="|${CONFORMANCE_SKIP}"

rm -rf "$OUT"
mkdir -p "$OUT"
log "focus: $focus; report in $OUT"
t=$SECONDS
# ginkgo's own flags, then the e2e framework's
args=(
  --procs="${CONFORMANCE_PROCS:-4}"
  --focus="$focus"
  --skip="$skip"
  --timeout="${CONFORMANCE_TIMEOUT:-3h}"
  --no-color
  "$BIN" --
  -kubeconfig="$KUBECONFIG"
  -storage.testdriver="$DRIVER_YAML"
  -report-dir="$OUT"
  # the lab's images are imported, not pulled; no cloud provider
  -provider=local
)
rc=0
: >"$OUT/specs.txt"
"$BIN_DIR/ginkgo" "${args[@]}" >"$OUT/e2e.log" 2>&1 &
pid=$!
# the log is long: one line per finished spec (storage_test.go writes them)
tail -n +1 --pid="$pid" -f "$OUT/specs.txt" &
wait "$pid" || rc=$?
wait
log "e2e-storage.test exited $rc after $((SECONDS - t))s"
sed -n '/^Summarizing [0-9]* Failure/,$p; /^Ran [0-9]* of [0-9]* Specs/,$p' "$OUT/e2e.log" | tail -n 40

# per testsuite counts from the JUnit report: specs that ran or were
# skipped at run time (with the reason); specs the focus left out do not count
python3 "$E2E_K8S_DIR/conformance/junit-table.py" "$OUT"/junit_*.xml | tee "$OUT/table.md"
[ "$rc" -eq 0 ] && ! grep -q '^[0-9]* passed, [1-9]' "$OUT/table.md"
