#!/bin/bash
# The whole Kubernetes e2e (make e2e), from a bare Debian 12 machine:
#   deps      install-deps.sh (Debian packages; a no-op when installed)
#   tools     build-tools.sh (Kubernetes, helm, kubeconform, sidecars; cached
#             in $RBDCSI_CACHE: ~25 min cold on 2 cores, seconds warm)
#   checks    chart-check.sh (helm lint --strict, kubeconform) and
#             render-deploy.sh --check
#   images    images.sh build (driver image from the Dockerfile, sidecars,
#             registrar, livenessprobe, busybox, pause); its base images are made
#             in the background from the start, while the tools compile
#   ceph      e2e/ceph/up.sh in $E2E_CEPH_DIR
#   lab       lab-up.sh (imports the images)
#   e2e       e2e.sh (scenarios; prints `N passed, N failed`)
# and always, at the end: lab-down.sh, e2e/ceph/down.sh (E2E_KEEP=1 keeps
# both running, with the release and test objects, for debugging;
# LAB_KEEP=1 keeps both running after a run that passed, with the release
# and test objects removed as usual, for a `make conformance` after it).
# Exits non-zero when a phase or a scenario fails.
#
# usage: run.sh [e2e|conformance|down]
#   conformance (make conformance): the same lab, then instead of the
#   scenarios: build-tools.sh e2e, images.sh e2e, e2e.sh install-only and
#   conformance.sh (Kubernetes' External Storage testsuites). A lab that is
#   already up (E2E_KEEP=1 or LAB_KEEP=1 before) is reused and left running;
#   its driver image is rebuilt from this tree and imported first, so the
#   testsuites never see an older driver.
#   down (make e2e-down): stop a lab and its Ceph that a run left running.
# The lab is one per machine: the run holds $LAB_LOCK throughout, unless it
# was started under it already (flock $LAB_LOCK make ...).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=k8s-e2e
MODE=${1:-e2e}
case $MODE in
  e2e | conformance | down) ;;
  *) die "usage: run.sh [e2e|conformance|down]" ;;
esac
holds_lab_lock || {
  wait_s=${LAB_LOCK_WAIT:-3600}
  log "taking the lab lock $LAB_LOCK (waits up to ${wait_s}s while another run holds it; LAB_LOCK_WAIT)"
  # -o: the lab's daemons must not inherit the lock and keep it after the run
  rc=0
  RBDCSI_LAB_LOCKED=$LAB_LOCK flock -o -w "$wait_s" -E 75 "$LAB_LOCK" bash "$0" "$@" || rc=$?
  [ "$rc" -ne 75 ] || die "another make e2e or make conformance held the lab lock $LAB_LOCK for ${wait_s}s (fuser $LAB_LOCK shows it); stop it or raise LAB_LOCK_WAIT"
  exit "$rc"
}
CEPH_SCRIPTS=$REPO_ROOT/e2e/ceph
T0=$SECONDS
SUMMARY=()
RESULT=""
BASE_PID=""
BASE_LOG=$RBDCSI_CACHE/.images-base.log
REUSED=0 # conformance on a lab that was up before: left as found

# lab_teardown: stop the lab and its Ceph (idempotent)
lab_teardown() {
  "$E2E_K8S_DIR/lab-down.sh" >/dev/null 2>&1
  CEPH_DIR=$E2E_CEPH_DIR "$CEPH_SCRIPTS/down.sh" >/dev/null 2>&1
}
if [ "$MODE" = down ]; then
  lab_teardown
  log "lab ($LAB_DIR) and its Ceph ($E2E_CEPH_DIR) stopped"
  exit 0
fi

# phase NAME COMMAND...: run, time, stop the run on failure
phase() {
  local name=$1 t=$SECONDS rc=0
  shift
  log ">>> $name"
  "$@" || rc=$?
  SUMMARY+=("$(printf '%-8s %4ds  %s' "$name" $((SECONDS - t)) "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")")")
  if [ $rc -ne 0 ]; then
    log "<<< $name FAILED after $((SECONDS - t))s"
    [ -n "$RESULT" ] || RESULT="0 passed, 1 failed"
    exit $rc
  fi
  log "<<< $name ok in $((SECONDS - t))s"
}

finish() {
  local rc=$?
  # a failure before the images phase: stop the background base-image build
  [ -z "$BASE_PID" ] || { pkill -TERM -P "$BASE_PID" 2>/dev/null; kill "$BASE_PID" 2>/dev/null; }
  if [ "$REUSED" = 1 ]; then
    log "the lab was up before the run: left running"
  elif [ "${E2E_KEEP:-0}" = 1 ] || { [ "${LAB_KEEP:-0}" = 1 ] && [ $rc -eq 0 ]; }; then
    log "lab ($LAB_DIR) and Ceph ($E2E_CEPH_DIR) left running (E2E_KEEP or LAB_KEEP); make e2e-down stops them"
  else
    local t=$SECONDS
    "$E2E_K8S_DIR/lab-down.sh" --keep >/dev/null 2>&1
    # keep the lab's logs of a failed run next to the cache
    if [ $rc -ne 0 ] && [ -d "$LAB_DIR" ]; then
      rm -rf "$RBDCSI_CACHE/last-failed-lab"
      mkdir -p "$RBDCSI_CACHE/last-failed-lab"
      cp -r "$LAB_DIR/logs" "$LAB_DIR/e2e-artifacts" "$RBDCSI_CACHE/last-failed-lab/" 2>/dev/null
      log "logs of the failed run: $RBDCSI_CACHE/last-failed-lab"
    fi
    lab_teardown
    SUMMARY+=("$(printf '%-8s %4ds  %s' teardown $((SECONDS - t)) ok)")
  fi
  log "summary (total $((SECONDS - T0))s):"
  local l
  for l in "${SUMMARY[@]}"; do log "  $l"; done
  echo "${RESULT:-0 passed, 1 failed}"
  exit $rc
}
trap finish EXIT

# run_tests SCRIPT ARGS...: run a test script; its last `N passed, N failed`
# line becomes the run's result
run_tests() {
  local out=$RBDCSI_CACHE/.e2e-output rc=0
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  RESULT=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
  rm -f "$out"
  return $rc
}
run_e2e() { run_tests "$E2E_K8S_DIR/e2e.sh"; }

# base_images_wait: the background `images.sh base` finished well
base_images_wait() {
  local rc=0
  wait "$BASE_PID" || rc=$?
  BASE_PID=""
  [ $rc -eq 0 ] || { cat "$BASE_LOG" >&2; log "making the base images failed" >&2; }
  return $rc
}

images_build() { base_images_wait && "$E2E_K8S_DIR/images.sh" build; }

# conformance_phases: the e2e binary and its images, the driver, the tests
conformance_phases() {
  phase e2e-tool "$E2E_K8S_DIR/build-tools.sh" e2e
  phase e2e-imgs sh -c "'$E2E_K8S_DIR/images.sh' e2e && '$E2E_K8S_DIR/images.sh' import"
  phase install "$E2E_K8S_DIR/e2e.sh" install-only
  phase conform run_tests "$E2E_K8S_DIR/conformance.sh"
}

if [ "$MODE" = conformance ] && lab_running; then
  REUSED=1
  log "the lab is up ($LAB_DIR, Ceph $E2E_CEPH_DIR): reusing it, with this tree's driver image"
  phase tools "$E2E_K8S_DIR/build-tools.sh"
  phase images "$E2E_K8S_DIR/images.sh" build
  conformance_phases
  exit 0
fi

phase deps "$E2E_K8S_DIR/install-deps.sh"
# The Dockerfile's base images are mostly downloads (debootstrap, apt): make
# them while the tools compile, which saves minutes on a cold run.
mkdir -p "$RBDCSI_CACHE"
"$E2E_K8S_DIR/images.sh" base >"$BASE_LOG" 2>&1 &
BASE_PID=$!
phase tools "$E2E_K8S_DIR/build-tools.sh"
[ "$MODE" = e2e ] && phase checks sh -c "'$E2E_K8S_DIR/chart-check.sh' all && '$E2E_K8S_DIR/render-deploy.sh' --check"
phase images images_build
phase ceph env CEPH_DIR="$E2E_CEPH_DIR" CEPH_RESTART=1 CEPH_DATA_POOL=0 CEPH_OSD_GB="${E2E_CEPH_OSD_GB:-4}" \
  "$CEPH_SCRIPTS/up.sh"
phase lab "$E2E_K8S_DIR/lab-up.sh"
[ "$MODE" = conformance ] && { conformance_phases; exit 0; }
phase e2e run_e2e
