#!/bin/bash
# Static checks of the Helm chart, offline:
#   chart-check.sh lint          helm lint --strict with the default values and
#                                with every charts/rbd-csi/ci/*-values.yaml
#   chart-check.sh kubeconform   helm template of the same value sets,
#                                validated by kubeconform -strict against
#                                schemas generated from Kubernetes $K8S_VERSION
#   chart-check.sh setup [FILE...]
#                                what `rbd-csi setup` prints, validated the
#                                same way: the golden file its unit test keeps
#                                equal to its output (internal/setup/testdata),
#                                and the FILEs given (the e2e scenario's live
#                                output)
#   chart-check.sh all           lint, kubeconform and setup
# Builds helm, kubeconform and the schemas first when they are not cached.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=chart-check
CHART=$REPO_ROOT/charts/rbd-csi
ACTION=${1:-all}

# value sets: "" is the defaults
value_sets() {
  echo default
  local f
  for f in "$CHART"/ci/*-values.yaml; do [ -e "$f" ] && echo "$f"; done
}
values_flag() { [ "$1" = default ] || echo "--values=$1"; }

lint() {
  "$E2E_K8S_DIR/build-tools.sh" helm >/dev/null
  local v n=0
  for v in $(value_sets); do
    # shellcheck disable=SC2046
    "$HELM" lint --strict --kube-version "$K8S_VERSION" $(values_flag "$v") "$CHART" >"$RBDCSI_CACHE/.lint.out" 2>&1 || {
      cat "$RBDCSI_CACHE/.lint.out" >&2
      die "helm lint --strict failed with values: $(basename "$v")"
    }
    n=$((n + 1))
  done
  log "helm lint --strict: clean with $n value sets"
  render_checks
}

# render_checks: rendered values that keep a node safe by default
render_checks() {
  local out
  expect_arg() { # expect_arg WANT HELM-ARGS...: the node plugin gets WANT
    local want=$1
    shift
    out=$("$HELM" template rbd-csi "$CHART" --kube-version "$K8S_VERSION" --set metrics.enabled=true "$@")
    grep -qF -- "$want" <<<"$out" || die "helm template $*: no '$want' in the output"
  }
  expect_arg "--metrics-address=127.0.0.1:9682"
  expect_arg "--metrics-address=:9682" --set node.hostNetwork=false
  expect_arg "--metrics-address=\$(HOST_IP):9682" --set metrics.nodeBindAddress=hostIP
  grep -qF "fieldPath: status.hostIP" <<<"$out" || die "metrics.nodeBindAddress=hostIP: no HOST_IP from status.hostIP"
  expect_arg "--metrics-address=0.0.0.0:9682" --set metrics.nodeBindAddress=0.0.0.0
  expect_arg "--keyring-dir=/run/rbd-csi/keyrings"
  grep -qF "medium: Memory" <<<"$out" || die "the keyring directory is not an in-memory emptyDir"
  # a restarted controller lists at once: the StorageClass's Secret by default
  expect_arg "--secrets-dir=/etc/rbd-csi/listing" --values "$CHART/ci/setup-values.yaml" --namespace rbd-csi
  grep -qF "path: 1b767d01-4012-4593-9ca9-79007570bf1e/userKey" <<<"$out" || die "setup values: the StorageClass Secret is not mounted as listing credentials"
  # without credentials, given or derived, no --secrets-dir (and the NOTES,
  # which helm renders only against a cluster, warn on the same helper)
  out=$("$HELM" template rbd-csi "$CHART" --kube-version "$K8S_VERSION")
  ! grep -qF -- "--secrets-dir=" <<<"$out" || die "default values: --secrets-dir without listing credentials"
  log "render checks: node metrics on loopback under hostNetwork, keyrings in memory, listing credentials"
}

# Kinds without a schema offline: the Prometheus Operator publishes its CRDs
# only in its repository, not in a module the proxy serves.
SKIP_KINDS=ServiceMonitor

validate() {
  "$E2E_K8S_DIR/build-tools.sh" helm kubeconform schemas >/dev/null
  local v out
  log "not validated (no schema available offline): $SKIP_KINDS"
  for v in $(value_sets); do
    # shellcheck disable=SC2046
    out=$("$HELM" template rbd-csi "$CHART" --namespace rbd-csi --kube-version "$K8S_VERSION" $(values_flag "$v") |
      "$KUBECONFORM" -strict -summary -output text -skip "$SKIP_KINDS" \
        -schema-location "$SCHEMA_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json" 2>&1) || {
      echo "$out" >&2
      die "kubeconform failed with values: $(basename "$v")"
    }
    log "kubeconform ($(basename "$v")): $(echo "$out" | tail -n 1)"
  done
}

SETUP_GOLDEN=$REPO_ROOT/internal/setup/testdata/manifests.golden.yaml

validate_setup() {
  "$E2E_K8S_DIR/build-tools.sh" kubeconform schemas >/dev/null
  local f out
  for f in "$SETUP_GOLDEN" "$@"; do
    out=$("$KUBECONFORM" -strict -summary -output text \
      -schema-location "$SCHEMA_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$f" 2>&1) || {
      echo "$out" >&2
      die "kubeconform failed: rbd-csi setup output $f"
    }
    log "kubeconform (rbd-csi setup, $(basename "$f")): $(echo "$out" | tail -n 1)"
  done
}

case $ACTION in
  lint) lint ;;
  kubeconform) validate ;;
  setup) shift; validate_setup "$@" ;;
  all) lint; validate; validate_setup ;;
  *) die "usage: chart-check.sh [lint|kubeconform|setup [FILE...]|all]" ;;
esac
