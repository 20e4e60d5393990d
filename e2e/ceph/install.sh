#!/bin/bash
# Install the Debian 12 (bookworm) packages the rbd-csi tests need: a Ceph
# Pacific cluster (mon, osd, mgr), the rbd/rados tools and headers for go-ceph
# (cgo), rbd-fuse/rbd-nbd for the node data path, filesystem tools, gcc with
# the C library headers (only recommended by gcc, and --no-install-recommends
# is used here), make.
#
# Idempotent: when everything is installed it only asks dpkg and exits.
# `apt-get update` runs only when needed: no package lists yet, a wanted
# package has no install candidate, or the install failed on stale lists.
#
# usage: install.sh [EXTRA_PACKAGE...]     (or env RBDCSI_EXTRA_PKGS="a b")
#   RBDCSI_INSTALL_SIMULATE=1  only show what apt-get would do (apt-get -s)
# Needs root (or passwordless sudo) when something is missing.
set -euo pipefail

PKGS=(
  ceph-mon ceph-osd ceph-mgr ceph-common rbd-fuse rbd-nbd
  librados-dev librbd-dev
  e2fsprogs xfsprogs util-linux mount cryptsetup-bin fuse3 gcc libc6-dev uuid-runtime make
)
# shellcheck disable=SC2206 # splitting the extra list on spaces is intended
PKGS+=(${RBDCSI_EXTRA_PKGS:-} "$@")
SIMULATE=${RBDCSI_INSTALL_SIMULATE:-0}

log() { echo "[install] $*"; }
t0=$SECONDS

# prints the wanted packages that are not fully installed (one dpkg call)
missing_pkgs() {
  local -A ok=()
  local name st
  while IFS=' ' read -r name st; do
    [ "$st" = ii ] && ok[$name]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
  for name in "$@"; do [ -n "${ok[$name]:-}" ] || echo "$name"; done
}

mapfile -t missing < <(missing_pkgs "${PKGS[@]}")
if [ ${#missing[@]} -eq 0 ]; then
  log "all ${#PKGS[@]} packages already installed, nothing to do"
  exit 0
fi
log "missing: ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ] && [ "$SIMULATE" != 1 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "[install] root is needed to install: ${missing[*]}" >&2
    echo "[install] run: sudo $0" >&2
    exit 1
  fi
fi

# Waits for the dpkg lock: .ci/run installs from two lanes at once.
apt_get() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=900 "$@"
}
apt_update() {
  if [ "$SIMULATE" = 1 ]; then log "would run: apt-get update"; return; fi
  log "apt-get update"
  apt_get update >/dev/null
}
apt_install() {
  local sim=()
  [ "$SIMULATE" = 1 ] && sim=(-s)
  apt_get install "${sim[@]}" -y --no-install-recommends "${missing[@]}"
}

# Refresh the lists first only if there are none or one package is unknown.
updated=0
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  apt_update; updated=1
else
  for p in "${missing[@]}"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then apt_update; updated=1; break; fi
  done
fi

if ! apt_install; then
  # stale lists can name files the mirror no longer has: refresh once, retry
  [ "$updated" = 1 ] && exit 1
  log "install failed; refreshing the package lists and retrying"
  apt_update
  apt_install
fi
if [ "$SIMULATE" = 1 ]; then log "simulation only, nothing installed"; exit 0; fi

mapfile -t still < <(missing_pkgs "${missing[@]}")
if [ ${#still[@]} -ne 0 ]; then
  echo "[install] still not installed: ${still[*]}" >&2
  exit 1
fi
log "installed ${#missing[@]} package(s) in $((SECONDS - t0))s: ${missing[*]}"
