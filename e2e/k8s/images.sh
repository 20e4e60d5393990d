#!/bin/bash
# Build the images the e2e lab runs, without a Docker engine or a registry,
# as OCI archives in $IMAGE_DIR, and import them into the lab's containerd.
#
# usage: images.sh build     build what is missing or stale (default)
#        images.sh base      only the Dockerfile's base images
#        images.sh driver    only the driver image (after a code change)
#        images.sh import    import every archive into the lab's containerd
#        images.sh all       both
#        images.sh e2e       the e2e testsuites' busybox and agnhost (make
#                            conformance; build-tools.sh e2e first)
#
# Images (all fully qualified: the CRI lists only those):
#   local.test/rbd-csi:e2e              the repo's Dockerfile, via buildah bud
#   local.test/csi-provisioner:<ver>    the sidecars built by build-tools.sh,
#   local.test/csi-resizer:<ver>        one static binary each (the registrar
#   local.test/csi-snapshotter:<ver>    and livenessprobe from the upstream
#   local.test/snapshot-controller:<ver> source tarballs)
#   local.test/csi-attacher:<ver>
#   local.test/csi-node-driver-registrar:<ver>
#   local.test/livenessprobe:<ver>
#   local.test/busybox:e2e              Debian's busybox-static, for test pods
#   $PAUSE_IMAGE                        e2e/k8s/pause, the CRI sandbox image
# The Dockerfile's bases, debian:bookworm-slim and golang:1.26-bookworm, cannot
# be pulled either: they are made once with debootstrap (slim, with the official
# image's apt/dpkg trimming) and from this host's Go, and kept in buildah's
# storage under $RBDCSI_CACHE/buildah, with the build's layer cache.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=images
ACTION=${1:-build}

DRIVER_IMAGE=${DRIVER_IMAGE:-local.test/rbd-csi:e2e}
BUSYBOX_IMAGE=${BUSYBOX_IMAGE:-local.test/busybox:e2e}
BUILDAH_DIR=$RBDCSI_CACHE/buildah
mkdir -p "$IMAGE_DIR" "$BUILDAH_DIR/tmp"

setup_buildah() {
  command -v buildah >/dev/null || die "buildah not found: run e2e/k8s/install-deps.sh"
  cat >"$BUILDAH_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$BUILDAH_DIR/runroot"
graphroot = "$BUILDAH_DIR/storage"
CONF
  export CONTAINERS_STORAGE_CONF=$BUILDAH_DIR/storage.conf TMPDIR=$BUILDAH_DIR/tmp BUILDAH_ISOLATION=chroot
}

has_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# archive_of REF: where REF's OCI archive lives
archive_of() { echo "$IMAGE_DIR/$(echo "$1" | tr '/:' '__').tar"; }

# save REF: buildah storage -> OCI archive (atomically)
save() {
  local out
  out=$(archive_of "$1")
  rm -f "$out.tmp"
  buildah push -q "$1" "oci-archive:$out.tmp:$1" >/dev/null
  mv "$out.tmp" "$out"
}

# Debian mirrors this host uses (deb822 or one-line sources), main and security
debian_mirrors() {
  local main sec
  main=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  sec=$(awk '/^URIs:/{n++; if (n == 2) {print $2; exit}}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$main" ] || main=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$sec" ] || sec=$(awk '$1 == "deb" && $3 ~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${main:-http://deb.debian.org/debian} ${sec:-http://deb.debian.org/debian-security}"
}

base_images() {
  local paths=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin c m r main sec
  if ! has_image docker.io/library/debian:bookworm-slim; then
    read -r main sec < <(debian_mirrors)
    log "making debian:bookworm-slim with debootstrap from $main (~1 min)"
    r=$BUILDAH_DIR/rootfs-slim
    rm -rf "$r"
    debootstrap --variant=minbase bookworm "$r" "$main" >"$BUILDAH_DIR/debootstrap.log" 2>&1 ||
      die "debootstrap failed, see $BUILDAH_DIR/debootstrap.log"
    rm -f "$r/etc/apt/sources.list"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$main" "$sec" >"$r/etc/apt/sources.list.d/debian.sources"
    # the official slim image's settings: apt keeps no .debs, dpkg installs
    # no docs, man pages or translations (otherwise images double in size)
    printf '%s\n' \
      'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$r/etc/apt/apt.conf.d/docker-clean"
    echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
    mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/linda/*' \
      'path-exclude /usr/share/lintian/overrides/*' 'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/share/man/*' >"$r/etc/dpkg/dpkg.cfg.d/docker"
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$r"/usr/share/{groff,info,linda,locale,man}/* "$r"/usr/share/lintian/overrides/*
    chroot "$r" apt-get clean
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin
    : >"$r/etc/resolv.conf"
    : >"$r/etc/hostname"
    c=$(buildah from --pull-never scratch)
    m=$(buildah mount "$c")
    tar -C "$r" --numeric-owner -cf - . | tar -C "$m" --numeric-owner -xpf -
    buildah umount "$c" >/dev/null
    buildah config --os linux --arch amd64 --env PATH=$paths --cmd bash "$c"
    buildah commit -q --rm "$c" docker.io/library/debian:bookworm-slim >/dev/null
    rm -rf "$r"
  fi
  local gover golang
  gover=$(go env GOVERSION)
  gover=${gover#go}
  golang=docker.io/library/golang:${gover%.*}-bookworm
  if ! has_image "$golang"; then
    log "making ${golang#docker.io/library/} from debian:bookworm-slim and this host's Go $gover"
    c=$(buildah from --pull-never docker.io/library/debian:bookworm-slim)
    # extra CA certificates of this host (a TLS-inspecting proxy in front of
    # the Go module proxy needs them), picked up by ca-certificates' postinst
    if [ -d /usr/local/share/ca-certificates ]; then
      buildah copy -q "$c" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
    fi
    buildah run --network host "$c" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl netbase git gcc g++ libc6-dev make pkg-config >/dev/null && rm -rf /var/lib/apt/lists/*'
    buildah copy -q "$c" "$(go env GOROOT)" /usr/local/go >/dev/null
    buildah config --env PATH=/go/bin:/usr/local/go/bin:$paths --env GOLANG_VERSION="$gover" \
      --env GOTOOLCHAIN=local --env GOPATH=/go --workingdir /go --cmd bash "$c"
    buildah commit -q --rm "$c" "$golang" >/dev/null
  fi
}

driver_image() {
  local version t=$SECONDS
  version=$(git -C "$REPO_ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)
  log "building $DRIVER_IMAGE from $REPO_ROOT/Dockerfile (version $version)"
  buildah bud --pull-never --isolation chroot --network host --layers -q \
    ${GOPROXY:+--build-arg GOPROXY="$GOPROXY"} \
    --build-arg VERSION="$version" -f "$REPO_ROOT/Dockerfile" -t "$DRIVER_IMAGE" "$REPO_ROOT" >"$BUILDAH_DIR/driver-build.log" 2>&1 || {
    tail -n 30 "$BUILDAH_DIR/driver-build.log" >&2
    buildah rm -a >/dev/null 2>&1 || true
    die "driver image build failed (full log: $BUILDAH_DIR/driver-build.log)"
  }
  save "$DRIVER_IMAGE"
  log "$DRIVER_IMAGE built in $((SECONDS - t))s ($(du -m "$(archive_of "$DRIVER_IMAGE")" | cut -f1) MiB archive)"
}

# bin_image REF ENTRYPOINT_JSON FILE...: a scratch image with FILEs in /
bin_image() {
  local ref=$1 ep=$2 r c
  shift 2
  r=$(mktemp -d "$BUILDAH_DIR/tmp/rootfs.XXXXXX")
  mkdir -p "$r/tmp"
  chmod 1777 "$r/tmp"
  cp "$@" "$r/"
  c=$(buildah from --pull-never scratch)
  buildah copy -q "$c" "$r" / >/dev/null
  buildah config --os linux --arch amd64 --entrypoint "$ep" --cmd '[]' "$c"
  buildah commit -q --rm "$c" "$ref" >/dev/null
  rm -rf "$r"
  save "$ref"
}

# fresh REF FILE...: REF's archive exists and is newer than every FILE
fresh() {
  local a f
  a=$(archive_of "$1")
  shift
  [ -f "$a" ] || return 1
  for f in "$@"; do [ "$a" -nt "$f" ] || return 1; done
}

sidecar_images() {
  local name ver bin
  for spec in "csi-provisioner external-provisioner $PROVISIONER_VERSION" \
    "csi-resizer external-resizer $RESIZER_VERSION" \
    "csi-attacher external-attacher $ATTACHER_VERSION" \
    "csi-snapshotter external-snapshotter $SNAPSHOTTER_VERSION" \
    "snapshot-controller external-snapshotter $SNAPSHOTTER_VERSION" \
    "csi-node-driver-registrar node-driver-registrar $REGISTRAR_VERSION" \
    "livenessprobe livenessprobe $LIVENESSPROBE_VERSION"; do
    read -r bin name ver <<<"$spec"
    local b=$RBDCSI_CACHE/$name-$ver/bin/$bin ref=local.test/$bin:$ver
    [ -x "$b" ] || die "$b missing: run e2e/k8s/build-tools.sh"
    fresh "$ref" "$b" && continue
    bin_image "$ref" "[\"/$bin\"]" "$b"
    log "$ref made"
  done
}

pause_image() {
  fresh "$PAUSE_IMAGE" "$E2E_K8S_DIR/pause/main.go" && return
  local out=$BUILDAH_DIR/tmp/pause
  mkdir -p "$out"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause" ./e2e/k8s/pause)
  bin_image "$PAUSE_IMAGE" '["/pause"]' "$out/pause"
  rm -rf "$out"
  log "$PAUSE_IMAGE made"
}

busybox_image() {
  fresh "$BUSYBOX_IMAGE" /bin/busybox && return
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || die "/bin/busybox missing: run e2e/k8s/install-deps.sh (busybox-static)"
  ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static: install busybox-static"
  local r c a
  r=$(mktemp -d "$BUILDAH_DIR/tmp/rootfs.XXXXXX")
  mkdir -p "$r/bin" "$r/tmp" "$r/etc"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
  echo 'root:x:0:0:root:/:/bin/sh' >"$r/etc/passwd"
  echo 'root:x:0:' >"$r/etc/group"
  c=$(buildah from --pull-never scratch)
  buildah copy -q "$c" "$r" / >/dev/null
  buildah config --os linux --arch amd64 --env PATH=/bin --cmd '["/bin/sh"]' "$c"
  buildah commit -q --rm "$c" "$BUSYBOX_IMAGE" >/dev/null
  rm -rf "$r"
  save "$BUSYBOX_IMAGE"
  log "$BUSYBOX_IMAGE made"
}

# debian_image REF PACKAGE...: debian:bookworm-slim with Debian PACKAGEs, as
# the e2e images made that way upstream (test/images/*/Dockerfile)
debian_image() {
  local ref=$1 c
  shift
  c=$(buildah from --pull-never docker.io/library/debian:bookworm-slim)
  buildah run --network host "$c" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null && rm -rf /var/lib/apt/lists/*"
  buildah commit -q --rm "$c" "$ref" >/dev/null
  save "$ref"
  log "$ref made (debian:bookworm-slim with $*)"
}

# e2e_images: the images Kubernetes' storage testsuites start (make
# conformance), under the names the e2e binary asks for (its --list-images):
# every e2e busybox tag is the lab's busybox image; every e2e agnhost tag is
# that image plus the agnhost program built from the same k8s.io/kubernetes
# (build-tools.sh e2e); host-exec pods run busybox's nsenter in it.
# glibc-dns-testing is upstream's recipe (bookworm-slim with dnsutils); the
# nginx image, whose shell the volumes suite's exec test runs, is
# bookworm-slim with Debian's nginx (its version, not the tag's).
e2e_images() {
  local bin=$RBDCSI_CACHE/k8s-e2e-storage-$K8S_VERSION/bin list ref c
  [ -x "$bin/e2e-storage.test" ] && [ -x "$bin/agnhost" ] || die "$bin/e2e-storage.test missing: run build-tools.sh e2e"
  list=$("$bin/e2e-storage.test" --list-images) || die "$bin/e2e-storage.test --list-images failed"
  busybox_image
  for ref in $(grep -E '^registry\.k8s\.io/e2e-test-images/busybox:' <<<"$list"); do
    fresh "$ref" "$(archive_of "$BUSYBOX_IMAGE")" && continue
    buildah tag "$BUSYBOX_IMAGE" "$ref"
    save "$ref"
    log "$ref made (the lab's busybox)"
  done
  for ref in $(grep -E '^registry\.k8s\.io/e2e-test-images/agnhost:' <<<"$list"); do
    fresh "$ref" "$bin/agnhost" "$(archive_of "$BUSYBOX_IMAGE")" && continue
    c=$(buildah from --pull-never "$BUSYBOX_IMAGE")
    buildah copy -q "$c" "$bin/agnhost" /agnhost >/dev/null
    buildah config --entrypoint '["/agnhost"]' --cmd '[]' "$c"
    buildah commit -q --rm "$c" "$ref" >/dev/null
    save "$ref"
    log "$ref made (agnhost $(cat "$bin/../agnhost.version"))"
  done
  base_images
  ref=$(grep -m1 -E '^registry\.k8s\.io/e2e-test-images/glibc-dns-testing:' <<<"$list") || die "no glibc-dns-testing among the e2e images"
  [ -f "$(archive_of "$ref")" ] || debian_image "$ref" dnsutils
  local first=""
  for ref in $(grep -E '^registry\.k8s\.io/e2e-test-images/nginx:' <<<"$list"); do
    if [ -z "$first" ]; then
      first=$ref
      [ -f "$(archive_of "$ref")" ] || debian_image "$ref" nginx-light
    elif [ ! -f "$(archive_of "$ref")" ]; then
      buildah tag "$first" "$ref"
      save "$ref"
      log "$ref made (as $first)"
    fi
  done
  [ -n "$first" ] || die "no nginx among the e2e images"
}

build_all() {
  setup_buildah
  base_images
  pause_image
  busybox_image
  sidecar_images
  driver_image
}

# import_all: every archive this lab's containerd has not imported yet, or
# that changed since (a stamp per archive in the lab's directory, which
# lab-down.sh removes with the lab)
import_all() {
  [ -S "$CONTAINERD_SOCK" ] || die "the lab's containerd is not running ($CONTAINERD_SOCK): run lab-up.sh"
  local a stamp n=0 kept=0
  mkdir -p "$LAB_DIR/imported"
  for a in "$IMAGE_DIR"/*.tar; do
    stamp=$LAB_DIR/imported/$(basename "$a")
    if [ -e "$stamp" ] && [ "$stamp" -nt "$a" ]; then
      kept=$((kept + 1))
      continue
    fi
    ctr_lab image import "$a" >/dev/null || die "importing $a failed"
    touch "$stamp"
    n=$((n + 1))
  done
  log "imported $n images into the lab's containerd ($kept imported before and unchanged)"
}

case $ACTION in
  base) setup_buildah; base_images; log "base images ready" ;;
  driver) setup_buildah; base_images; driver_image ;;
  build) build_all ;;
  import) import_all ;;
  e2e) setup_buildah; e2e_images ;;
  all) build_all; import_all ;;
  *) die "usage: images.sh [base|driver|build|import|all|e2e]" ;;
esac
