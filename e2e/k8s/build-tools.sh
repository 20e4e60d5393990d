#!/bin/bash
# Build the tools the Kubernetes e2e needs from the Go module proxy and cache
# them under $RBDCSI_CACHE/<name>-<version>/ (default /var/cache/rbd-csi).
# A tool whose directory is complete is not rebuilt, so reruns take seconds.
#
# usage: build-tools.sh [TOOL...]      (default: all of them)
#   k8s          kube-apiserver, kube-controller-manager, kube-scheduler,
#                kubelet, kubectl ($K8S_VERSION; ~20 min of 2 cores cold)
#   schemas      kubeconform schemas generated from that version's swagger.json
#   helm         helm ($HELM_VERSION, ~3.5 min cold)
#   kubeconform  kubeconform ($KUBECONFORM_VERSION)
#   sidecars     csi-provisioner, csi-resizer, csi-attacher, csi-snapshotter,
#                snapshot-controller (+ the snapshot CRDs)
#   upstream     csi-node-driver-registrar and livenessprobe, offline from
#                the upstream source tarballs in $UPSTREAM_DIR (~3 min cold)
#   e2e          e2e-storage.test (Kubernetes' External Storage testsuites),
#                agnhost and ginkgo, $K8S_VERSION (not in the default set: only
#                `make conformance` needs it)
# Settings: see lib.sh (versions, RBDCSI_CACHE). BUILD_NICE (default 10) is
# the nice level of the compilers: the machine is shared.
#
# Why from source: the release binaries cannot be downloaded here; `go install
# pkg@version` is refused for these modules, so each module is copied out of
# the module cache and built in place, where its own replace directives apply.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=build-tools
NICE=(nice -n "${BUILD_NICE:-10}")
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local
WORK=$RBDCSI_CACHE/.work
mkdir -p "$RBDCSI_CACHE" "$WORK" "$TOOLS_BIN"

# done_dir DIR: the tool in DIR was built completely
done_dir() { [ -e "$1/.complete" ]; }
# finish DIR SRC_TMP: mark DIR complete, drop the source copy
finish() {
  printf 'built %s on %s with %s\n' "$(basename "$1")" "$(date -u +%FT%TZ)" "$(go env GOVERSION)" >"$1/.complete"
  rm -rf "$2"
}

# module_copy MODULE VERSION: copy the module's source out of the module cache
# into a writable work directory; prints that directory
module_copy() {
  local m=$1 v=$2 dir dst
  dir=$(go mod download -json "$m@$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || die "cannot download $m@$v from the module proxy"
  dst=$WORK/$(echo "$m" | tr / _)@$v
  rm -rf "$dst"
  cp -r "$dir" "$dst"
  chmod -R u+w "$dst"
  echo "$dst"
}

# link NAME TARGET: a stable name in $TOOLS_BIN for the versioned binary
link() { ln -sfn "$2" "$TOOLS_BIN/$1"; }

# K8S_SRC: the one prepared copy of k8s.io/kubernetes@$K8S_VERSION that the
# Kubernetes build and the e2e build share; removed once both are built
K8S_SRC=$WORK/k8s.io_kubernetes@$K8S_VERSION
K8S_SRC_READY=$K8S_SRC/.rbdcsi-prepared

# k8s_src: a writable copy of k8s.io/kubernetes@$K8S_VERSION whose go.mod
# builds outside the Kubernetes tree, made once; prints its directory
k8s_src() {
  local src staging=v0.${K8S_VERSION#v1.}
  if [ -e "$K8S_SRC_READY" ]; then
    echo "$K8S_SRC"
    return
  fi
  src=$(module_copy k8s.io/kubernetes "$K8S_VERSION")
  [ "$src" = "$K8S_SRC" ] || die "the Kubernetes source copy is $src, expected $K8S_SRC"
  # The module points its k8s.io/* staging modules at ./staging, which the
  # module zip does not hold: use the published v0.<minor>.<patch> instead.
  (
    cd "$src"
    rm -rf go.work go.work.sum vendor
    sed -i -E "s#=> \./staging/src/(k8s\.io/[A-Za-z0-9_.-]+)\$#=> \1 $staging#" go.mod
    ! grep -q '=> \./staging' go.mod || die "unrewritten staging replace in go.mod"
    go mod download
  ) >&2
  touch "$K8S_SRC_READY"
  echo "$src"
}

# k8s_src_done: drop the shared source copy when nothing needs it any more
k8s_src_done() {
  if done_dir "$RBDCSI_CACHE/k8s-$K8S_VERSION" && done_dir "$RBDCSI_CACHE/k8s-e2e-storage-$K8S_VERSION"; then
    rm -rf "$K8S_SRC"
  fi
}

# k8s_ldflags: stripped, with $K8S_VERSION as the version the binaries report
k8s_ldflags() {
  local ldf="-s -w" kv maj min
  maj=${K8S_VERSION#v}; maj=${maj%%.*}
  min=${K8S_VERSION#v*.}; min=${min%%.*}
  for kv in gitVersion=$K8S_VERSION gitMajor=$maj gitMinor=$min gitTreeState=clean \
    buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ); do
    ldf="$ldf -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  echo "$ldf"
}

# Same flags for every Kubernetes build, so they share the Go build cache
K8S_GOFLAGS=(-trimpath -tags selinux,notest,grpcnotrace)

build_k8s() {
  local out=$RBDCSI_CACHE/k8s-$K8S_VERSION src t=$SECONDS
  if done_dir "$out"; then log "k8s $K8S_VERSION: cached in $out"; return; fi
  log "k8s $K8S_VERSION: building (cold: ~20 min on 2 cores)"
  src=$(k8s_src)
  mkdir -p "$out/bin"
  (cd "$src" && CGO_ENABLED=0 "${NICE[@]}" go build "${K8S_GOFLAGS[@]}" -ldflags "$(k8s_ldflags)" \
    -o "$out/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler \
    ./cmd/kubelet ./cmd/kubectl)
  finish "$out" ""
  k8s_src_done
  link kubectl "$out/bin/kubectl"
  log "k8s $K8S_VERSION: built in $((SECONDS - t))s"
}

# The storage conformance binary: Kubernetes' test/e2e framework with only
# the External Storage testsuites linked in (conformance/e2e-storage), and
# from the same tree agnhost, the e2e tests' helper image program, and the
# ginkgo runner (parallel processes).
build_e2e() {
  local out=$RBDCSI_CACHE/k8s-e2e-storage-$K8S_VERSION src t=$SECONDS pkg=test/e2e/rbdcsi-storage
  local main=$E2E_K8S_DIR/conformance/e2e-storage/storage_test.go
  if done_dir "$out" && [ "$out/.complete" -nt "$main" ]; then log "e2e-storage $K8S_VERSION: cached in $out"; return; fi
  log "e2e-storage $K8S_VERSION: building (cold: see docs/testing.md)"
  src=$(k8s_src)
  mkdir -p "$src/$pkg" "$out/bin"
  # the file is kept out of this repository's module by its ignore tag
  sed '/^\/\/go:build ignore$/d' "$main" >"$src/$pkg/storage_test.go"
  rm -f "$out/.complete" # a rebuild after a change of $main
  (
    cd "$src"
    # new files moved into place: a running binary is not overwritten
    CGO_ENABLED=0 "${NICE[@]}" go test -c -vet=off "${K8S_GOFLAGS[@]}" -ldflags "$(k8s_ldflags)" \
      -o "$out/bin/.e2e-storage.test.new" "./$pkg"
    CGO_ENABLED=0 "${NICE[@]}" go build "${K8S_GOFLAGS[@]}" -ldflags "-s -w" \
      -o "$out/bin/.agnhost.new" ./test/images/agnhost
    # the ginkgo runner of the version the tests link, for parallel runs
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" \
      -o "$out/bin/.ginkgo.new" github.com/onsi/ginkgo/v2/ginkgo
    cp test/images/agnhost/VERSION "$out/agnhost.version"
  )
  mv "$out/bin/.e2e-storage.test.new" "$out/bin/e2e-storage.test"
  mv "$out/bin/.agnhost.new" "$out/bin/agnhost"
  mv "$out/bin/.ginkgo.new" "$out/bin/ginkgo"
  finish "$out" ""
  k8s_src_done
  log "e2e-storage $K8S_VERSION: built in $((SECONDS - t))s"
}

# module_dir MODULE VERSION: the module's directory in the module cache
module_dir() { go mod download -json "$1@$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'; }

# kubeconform schemas: the built-in kinds from the swagger.json of
# $K8S_VERSION, and the snapshot CRDs (VolumeSnapshotClass) of
# external-snapshotter's client module. Keyed by both versions.
build_schemas() {
  local out=$SCHEMA_DIR dir crd
  if done_dir "$out"; then log "schemas $K8S_VERSION: cached in $out"; return; fi
  dir=$(module_dir k8s.io/kubernetes "$K8S_VERSION")
  [ -f "$dir/api/openapi-spec/swagger.json" ] || die "no swagger.json in k8s.io/kubernetes@$K8S_VERSION"
  crd=$(module_dir github.com/kubernetes-csi/external-snapshotter/client/v8 "$SNAPSHOTTER_VERSION")/config/crd
  compgen -G "$crd/snapshot.storage.k8s.io_*.yaml" >/dev/null || die "no snapshot CRDs in $crd"
  rm -rf "$out"
  python3 "$E2E_K8S_DIR/openapi2schemas.py" "$dir/api/openapi-spec/swagger.json" "$out"
  # PyYAML: Debian's python3-yaml, so Debian's interpreter
  /usr/bin/python3 "$E2E_K8S_DIR/crd2schemas.py" "$out" "$crd"/snapshot.storage.k8s.io_*.yaml
  echo "from k8s.io/kubernetes@$K8S_VERSION api/openapi-spec/swagger.json and external-snapshotter/client/v8@$SNAPSHOTTER_VERSION config/crd" >"$out/.complete"
}

# build_module NAME MODULE VERSION VERSION_LDFLAG PKG...: a Go command from a
# module copy into $RBDCSI_CACHE/NAME-VERSION/bin (static, stripped)
build_module() {
  local name=$1 m=$2 v=$3 verflag=$4 out src t=$SECONDS
  shift 4
  out=$RBDCSI_CACHE/$name-$v
  if done_dir "$out"; then log "$name $v: cached in $out"; return; fi
  log "$name $v: building"
  src=$(module_copy "$m" "$v")
  (
    cd "$src"
    [ -z "${MODULE_EDIT:-}" ] || eval "$MODULE_EDIT"
    go mod download
    mkdir -p "$out/bin"
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w -X $verflag=$v" -o "$out/bin/" "$@"
  )
  [ -z "${MODULE_AFTER:-}" ] || (cd "$src" && eval "$MODULE_AFTER")
  finish "$out" "$src"
  log "$name $v: built in $((SECONDS - t))s"
}

build_helm() {
  build_module helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/internal/version.version ./cmd/helm
  link helm "$RBDCSI_CACHE/helm-$HELM_VERSION/bin/helm"
}

build_kubeconform() {
  build_module kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" main.version ./cmd/kubeconform
  link kubeconform "$RBDCSI_CACHE/kubeconform-$KUBECONFORM_VERSION/bin/kubeconform"
}

build_sidecars() {
  build_module external-provisioner github.com/kubernetes-csi/external-provisioner/v5 \
    "$PROVISIONER_VERSION" main.version ./cmd/csi-provisioner
  build_module external-resizer github.com/kubernetes-csi/external-resizer \
    "$RESIZER_VERSION" main.version ./cmd/csi-resizer
  build_module external-attacher github.com/kubernetes-csi/external-attacher/v4 \
    "$ATTACHER_VERSION" main.version ./cmd/csi-attacher
  # external-snapshotter replaces its client module with ./client, which is a
  # module of its own and not in the zip: use the published one. Its
  # config/crd/ has the snapshot CRDs, kept next to the binaries.
  local client=github.com/kubernetes-csi/external-snapshotter/client/v8
  MODULE_EDIT="sed -i -E 's#=> \\./client\$#=> $client $SNAPSHOTTER_VERSION#' go.mod" \
    MODULE_AFTER="d=\$(go mod download -json $client@$SNAPSHOTTER_VERSION | sed -n 's/^\t\"Dir\": \"\(.*\)\",\$/\1/p'); mkdir -p $RBDCSI_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/crd; cp \$d/config/crd/*.yaml $RBDCSI_CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/crd/" \
    build_module external-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 \
    "$SNAPSHOTTER_VERSION" main.version ./cmd/csi-snapshotter ./cmd/snapshot-controller
}

# build_vendored NAME VERSION PKG: a sidecar that the module proxy does not
# serve, from $UPSTREAM_DIR/NAME-VERSION.tar.gz (the upstream repository with
# its vendor/), offline, into $RBDCSI_CACHE/NAME-VERSION/bin
build_vendored() {
  local name=$1 v=$2 pkg=$3 out=$RBDCSI_CACHE/$1-$2 tarball=$UPSTREAM_DIR/$1-$2.tar.gz src t=$SECONDS
  if done_dir "$out"; then log "$name $v: cached in $out"; return; fi
  [ -f "$tarball" ] || die "$tarball missing (set RBDCSI_UPSTREAM_DIR to the folder of the upstream sidecar tarballs)"
  log "$name $v: building from $tarball"
  src=$(mktemp -d "$WORK/$name.XXXXXX")
  tar -xzf "$tarball" -C "$src" --strip-components=1
  [ -d "$src/vendor" ] || die "$tarball has no vendor/: it cannot build offline"
  mkdir -p "$out/bin"
  (cd "$src" && GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 "${NICE[@]}" \
    go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$out/bin/" "$pkg")
  finish "$out" "$src"
  log "$name $v: built in $((SECONDS - t))s"
}

build_upstream() {
  build_vendored node-driver-registrar "$REGISTRAR_VERSION" ./cmd/csi-node-driver-registrar
  build_vendored livenessprobe "$LIVENESSPROBE_VERSION" ./cmd/livenessprobe
}

TOOLS=("$@")
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=(kubeconform helm sidecars upstream schemas k8s)
for tool in "${TOOLS[@]}"; do
  case $tool in
    k8s | schemas | helm | kubeconform | sidecars | upstream | e2e) "build_$tool" ;;
    *) die "unknown tool $tool (k8s, schemas, helm, kubeconform, sidecars, upstream, e2e)" ;;
  esac
done
log "done: ${TOOLS[*]}"
