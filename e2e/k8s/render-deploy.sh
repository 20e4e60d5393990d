#!/bin/bash
# Render the plain manifests in deploy/ from the Helm chart with its default
# values (release rbd-csi, namespace rbd-csi), for clusters without Helm.
#   render-deploy.sh           (re)write deploy/rbd-csi.yaml
#   render-deploy.sh --check   fail when deploy/ differs from the chart
# Builds helm first when it is not cached.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=render-deploy
CHART=$REPO_ROOT/charts/rbd-csi
OUT=$REPO_ROOT/deploy/rbd-csi.yaml
RELEASE=rbd-csi
NAMESPACE=rbd-csi

"$E2E_K8S_DIR/build-tools.sh" helm >/dev/null

render() {
  cat <<HDR
# rbd-csi: plain manifests rendered from charts/rbd-csi with its default values
# (release "$RELEASE", namespace "$NAMESPACE"). Do not edit: regenerate with
# \`make deploy-manifests\` (e2e/k8s/render-deploy.sh).
#
# Before applying, set the Ceph clusters in the ConfigMap rbd-csi-config
# (config.json) and the driver image; then add Secrets and StorageClasses
# (see charts/rbd-csi/README.md). For anything else, prefer the chart.
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: rbd-csi
HDR
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION"
}

if [ "${1:-}" = --check ]; then
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  render >"$tmp"
  if ! diff -u "$OUT" "$tmp" >"$tmp.diff" 2>&1; then
    head -n 60 "$tmp.diff" >&2
    rm -f "$tmp.diff"
    die "deploy/ is out of sync with charts/rbd-csi: run make deploy-manifests"
  fi
  rm -f "$tmp.diff"
  log "deploy/rbd-csi.yaml matches the chart"
else
  mkdir -p "$(dirname "$OUT")"
  render >"$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  log "wrote ${OUT#"$REPO_ROOT"/} ($(grep -c '^kind:' "$OUT") objects)"
fi
