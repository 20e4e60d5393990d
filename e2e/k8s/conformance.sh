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
#   CONFORMANCE_SET=ci  one spec of each testsuite (CI_SPECS below), instead
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
# the stress and performance suites (many volumes for a long time), and the
# suites of what driver.yaml declares lacking, which would only skip:
# topology, capacity, volume-modify (VolumeAttributesClass), seLinuxMount,
# snapshotmetadata, volumegroupsnapshot*.
SUITES=(provisioning volumes volumeIO volumeMode subPath volume-expand snapshottable
  multiVolume ephemeral fsgroupchangepolicy volumeLimits read-write-once-pod)

# One spec per testsuite, the data path of each, for a short run (CI).
CI_SPECS=(
  'Dynamic PV \(default fs\)\] provisioning should provision storage with pvc data source$'
  'Dynamic PV \(xfs\)\] \[Slow\] volumes should store data'
  'Dynamic PV \(default fs\)\] volumeIO should write files of various sizes'
  'Dynamic PV \(block volmode\)\] volumeMode should fail to use a volume in a pod with mismatched mode'
  'Dynamic PV \(default fs\)\] subPath should support existing single file'
  'Dynamic PV \(block volmode\)\(allowExpansion\)\] volume-expand should resize volume when PVC is edited while pod is using it'
  'Dynamic Snapshot \(delete policy\)\] snapshottable .*check deletion \(persistent\)'
  'Dynamic PV \(ext4\)\] multiVolume .*two volumes with the same volume mode and retain data across pod recreation on the same node'
  'Generic Ephemeral-volume \(default fs\) \(late-binding\)\] ephemeral should create read/write inline ephemeral volume'
  'Dynamic PV \(default fs\)\] fsgroupchangepolicy \(Always\).*chgrp in first pod, new pod with different fsgroup'
  'Dynamic PV \(filesystem volmode\)\] volumeLimits should verify that all csinodes have volume limits'
  'Dynamic PV \(default fs\)\] read-write-once-pod should block a second pod'
)

# Specs the one-node lab cannot run, with the reason printed before the run.
# Each entry: REGEX|REASON
SKIPS=(
  '\[Disruptive\]|needs to restart the kubelet or the node (SSH to the node)'
  '\[Feature:Windows\]|Windows nodes only'
)

# The populator test runs sig-storage's hello-populator and
# volume-data-source-validator, whose images this lab does not build (they
# test Kubernetes' AnyVolumeDataSource; the driver sees a plain CreateVolume).
SKIPS+=("provisioning should provision storage with any volume data source|needs the images registry.k8s.io/sig-storage/hello-populator and volume-data-source-validator, which the lab cannot pull and does not build")

# The volumeMode suite looks for the pod's volumes below /var/lib/kubelet
# (hard-coded there, -kubelet-root-dir notwithstanding).
[ "$KUBELET_DIR" = /var/lib/kubelet ] ||
  SKIPS+=("volumeMode should not mount / map unused volumes in a pod|the test lists /var/lib/kubelet/pods (hard-coded); the lab's kubelet keeps its pods in $KUBELET_DIR")

# Growing a mounted ext4 needs CAP_SYS_RESOURCE, which the capability
# bounding set of some hosts lacks (even privileged containers then lack it):
# the driver answers FailedPrecondition and the volume is grown at its next
# stage, so the online growth tests of the default fs (ext4) cannot pass
# there. XFS (CAP_SYS_ADMIN only) is grown online either way.
cap_sys_resource() { (($(printf '%d' "0x$(awk '/^CapBnd:/ {print $2}' /proc/self/status)") >> 24 & 1)); }
if ! cap_sys_resource; then
  no_cap='this host lacks CAP_SYS_RESOURCE in its bounding set: a mounted ext4 grows at the next stage instead (e2e/k8s/README.md)'
  SKIPS+=('\[Testpattern: Dynamic PV \(default fs\)\(allowExpansion\)\] volume-expand should resize volume when PVC is edited while pod is using it|'"$no_cap"
    '\[Testpattern: Generic Ephemeral-volume \(default fs\)[^]]*\] ephemeral should support expansion of pvcs created for ephemeral pvcs|'"$no_cap")
fi

[ -x "$BIN" ] && [ -x "$BIN_DIR/ginkgo" ] || die "$BIN or ginkgo missing: run build-tools.sh e2e"
[ -f "$DRIVER_YAML" ] || die "$DRIVER_YAML missing"
KUBECTL_TIMEOUT=30s kc get --raw /readyz >/dev/null 2>&1 || die "the lab's API server does not answer: run lab-up.sh"

# suite_focus SUITE...: the ginkgo focus that selects these testsuites (a
# pattern may carry tags of its own: "[Testpattern: Dynamic PV (xfs)] [Slow]")
suite_focus() {
  local IFS='|'
  printf '\\[Testpattern: [^]]*\\]( \\[[^]]*\\])* (%s) ' "$*"
}

read -r -a suites <<<"${CONFORMANCE_SUITES:-${SUITES[*]}}"
focus=${CONFORMANCE_FOCUS:-$(suite_focus "${suites[@]}")}
if [ "${CONFORMANCE_SET:-}" = ci ]; then
  focus=$(IFS='|' && echo "\\[Testpattern: (${CI_SPECS[*]})")
fi
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
  # no cloud provider; the lab's kubelet keeps its pods below LAB_DIR
  -provider=local
  -kubelet-root-dir="$KUBELET_DIR"
)
rc=0
# ginkgo's succinct output: a dot per spec, S per skip, each failure in full
"$BIN_DIR/ginkgo" "${args[@]}" 2>&1 | tee "$OUT/e2e.log"
rc=${PIPESTATUS[0]}
log "e2e-storage.test exited $rc after $((SECONDS - t))s"

# per testsuite counts from the JUnit report: specs that ran or were
# skipped at run time (with the reason); specs the focus left out do not count
skip_args=(--focus "$focus")
for s in "${SKIPS[@]}"; do skip_args+=(--skip "$s"); done
python3 "$E2E_K8S_DIR/conformance/junit-table.py" "${skip_args[@]}" "$OUT"/junit_*.xml | tee "$OUT/table.md"
table_rc=${PIPESTATUS[0]}
# a focus that matches nothing (a spec renamed upstream) exits 0 too: a
# run counts only with a table whose summary has passed specs
passed=$(sed -n 's/^\([0-9]*\) passed, [0-9]* failed.*/\1/p' "$OUT/table.md" | tail -n 1)
[ "$table_rc" -eq 0 ] && [ "${passed:-0}" -gt 0 ] || { log "no passed spec in the JUnit report (table exit $table_rc): the focus matched nothing, or the run wrote no report"; exit 1; }
[ "$rc" -eq 0 ] && ! grep -q '^[0-9]* passed, [1-9]' "$OUT/table.md"
