# shellcheck shell=bash
# Common settings and helpers for the e2e/k8s scripts; sourced, not run.
# Every setting can be overridden from the environment.

# --- versions (bump here; each lands in its own cache directory) ----------
K8S_VERSION=${K8S_VERSION:-v1.36.1}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.8.0}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v5.3.0}
RESIZER_VERSION=${RESIZER_VERSION:-v1.14.0}
ATTACHER_VERSION=${ATTACHER_VERSION:-v4.13.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.7.0}
# Not on the Go module proxy: built offline from the upstream source tarballs
# (with vendor/) in $UPSTREAM_DIR, named <repo>-<version>.tar.gz (git describe)
REGISTRAR_VERSION=${REGISTRAR_VERSION:-v2.17.0-40-g3482d444}
LIVENESSPROBE_VERSION=${LIVENESSPROBE_VERSION:-v2.19.0-31-ge60f18af}
# the sandbox image the lab's containerd asks for (made locally, see images.sh)
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}

# --- directories -------------------------------------------------------------
# Built tools, one directory per <name>-<version>; kept between runs.
RBDCSI_CACHE=${RBDCSI_CACHE:-/var/cache/rbd-csi}
# The lab cluster's state (certificates, etcd, containerd, kubelet root, logs).
# Short: containerd and kubelet put unix sockets below it.
LAB_DIR=${LAB_DIR:-/tmp/rbdcsi-k8s}
# the lab kubelet's --root-dir (the chart's kubeletDir, the e2e tests' too)
KUBELET_DIR=$LAB_DIR/kubelet
# The e2e Ceph cluster (e2e/ceph/up.sh); at most 50 characters.
E2E_CEPH_DIR=${E2E_CEPH_DIR:-/tmp/rbdcsi-k8s-ceph}

# --- loopback ports of the lab ----------------------------------------------
ETCD_PORT=${ETCD_PORT:-12379}           # +1 peer, +2 metrics
APISERVER_PORT=${APISERVER_PORT:-16443}
KCM_PORT=${KCM_PORT:-17257}
SCHEDULER_PORT=${SCHEDULER_PORT:-17259}
KUBELET_PORT=${KUBELET_PORT:-17250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-17248}
# The kubelet's node name; the apiserver reaches the kubelet by it (loopback).
NODE_NAME=${NODE_NAME:-localhost}

K8S_BIN=$RBDCSI_CACHE/k8s-$K8S_VERSION/bin
TOOLS_BIN=$RBDCSI_CACHE/bin # symlinks to the versioned tools
HELM=${HELM:-$RBDCSI_CACHE/helm-$HELM_VERSION/bin/helm}
KUBECONFORM=${KUBECONFORM:-$RBDCSI_CACHE/kubeconform-$KUBECONFORM_VERSION/bin/kubeconform}
KUBECTL=${KUBECTL:-$K8S_BIN/kubectl}
# built-in kinds of $K8S_VERSION and the snapshot CRDs of $SNAPSHOTTER_VERSION
SCHEMA_DIR=${SCHEMA_DIR:-$RBDCSI_CACHE/k8s-schemas-$K8S_VERSION-snapshotter-$SNAPSHOTTER_VERSION}
IMAGE_DIR=${IMAGE_DIR:-$RBDCSI_CACHE/images} # OCI archives of the lab images
CONTAINERD_SOCK=$LAB_DIR/run/containerd.sock
# held by whoever runs the lab (run.sh takes it; flock $LAB_LOCK CMD too)
LAB_LOCK=${LAB_LOCK:-/tmp/rbdcsi-lab.lock}

E2E_K8S_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_K8S_DIR/../.." && pwd)
# the upstream sidecar tarballs: the workplace's shared/upstream, beside the clone
UPSTREAM_DIR=${RBDCSI_UPSTREAM_DIR:-$REPO_ROOT/../shared/upstream}

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
export PATH

# --- helpers -------------------------------------------------------------------
_LIB_T0=${EPOCHREALTIME/./}
# log MSG: a line prefixed with the script's name and the time since it started
log() {
  local ms=$(((${EPOCHREALTIME/./} - _LIB_T0) / 1000))
  printf '[%s %d.%01ds] %s\n' "${LOG_TAG:-$(basename "$0" .sh)}" $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
die() { log "error: $*" >&2; exit 1; }

# matches GREP-ARGS...: grep -q that reads all of its input. Under pipefail,
# grep -q leaving early can kill the writer with SIGPIPE, and the pipeline
# then fails although the line was found.
matches() { grep "$@" >/dev/null; }

# FAILED_CHECKS: what failed, repeated at the end of a run so that the
# tail of a long log (all a CI report may keep) still names it
FAILED_CHECKS=()

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.25 s
wait_until() {
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || {
      log "timed out after ${secs}s waiting for $what" >&2
      FAILED_CHECKS+=("timed out after ${secs}s: $what")
      return 1
    }
    sleep 0.25
  done
}

# ctr_lab ARGS...: ctr against the lab's containerd, Kubernetes namespace
ctr_lab() { ctr -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# kc ARGS...: kubectl against the lab; no request may hang (waits such as
# `delete --wait --timeout=` stay below KUBECTL_TIMEOUT)
kc() { KUBECONFIG=$LAB_DIR/admin.kubeconfig "$KUBECTL" --request-timeout="${KUBECTL_TIMEOUT:-300s}" "$@"; }

# pid_alive PID: the process exists and is no zombie
pid_alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# holds_lab_lock: this shell runs under $LAB_LOCK already: run.sh re-ran
# itself under it (RBDCSI_LAB_LOCKED), or one of its open files is the lock
# file (flock(1) without -o passes its locked descriptor on)
holds_lab_lock() {
  local fd
  [ "${RBDCSI_LAB_LOCKED:-}" != "$LAB_LOCK" ] || return 0
  for fd in /proc/$$/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$LAB_LOCK" ] && return 0
  done
  return 1
}

# lab_running: the lab's API server answers and its Ceph has its env file
lab_running() {
  [ -f "$E2E_CEPH_DIR/env" ] && KUBECTL_TIMEOUT=30s kc get --raw /readyz >/dev/null 2>&1
}
