#!/bin/bash
# Tear down the cluster made by up.sh. Idempotent: safe when nothing runs.
#   1. unmount filesystems on loop devices backed by files under $CEPH_DIR
#      (rbd-fuse image files), wherever they are mounted, and detach the loops
#   2. unmount everything mounted below $CEPH_DIR (rbd-fuse, ext4, xfs, ...)
#   3. stop rbd-fuse processes that use this cluster, then the daemons by
#      their pid files (clients, osd, mgr, mon)
#   4. delete $CEPH_DIR (unless CEPH_KEEP_DIR=1)
# Settings: CEPH_DIR (default /tmp/rbdcsi-ceph), CEPH_KEEP_DIR=1 keeps the files.
set -uo pipefail

CEPH_DIR=${CEPH_DIR:-/tmp/rbdcsi-ceph}
CEPH_DIR=${CEPH_DIR%/}
KEEP=${CEPH_KEEP_DIR:-0}
MARK=.rbdcsi-ceph

log() { echo "[ceph-down] $*"; }
[ -d "$CEPH_DIR" ] || { log "nothing at $CEPH_DIR"; exit 0; }
if [ -z "$(ls -A "$CEPH_DIR")" ]; then
  [ "$KEEP" = 1 ] || rmdir "$CEPH_DIR"
  log "$CEPH_DIR was empty"
  exit 0
fi
if [ ! -e "$CEPH_DIR/$MARK" ]; then
  log "$CEPH_DIR was not made by up.sh; not touching it" >&2
  exit 1
fi
t0=${EPOCHREALTIME/./}

unmount() { umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || log "cannot unmount $1"; }

# 1. loop devices on files below the cluster dir: unmount their users, detach
while read -r dev back; do
  case "$back" in "$CEPH_DIR"/*) ;; *) continue ;; esac
  findmnt -rn -S "$dev" -o TARGET | sort -r | while read -r m; do
    unmount "$m" && log "unmounted $m ($dev)"
  done
  losetup -d "$dev" 2>/dev/null && log "detached $dev ($back)"
done < <(losetup -n -l -O NAME,BACK-FILE 2>/dev/null)

# 2. everything mounted below the cluster dir, deepest first
findmnt -rn -o TARGET | awk -v d="$CEPH_DIR/" 'index($1, d) == 1' | sort -r |
  while read -r m; do unmount "$m" && log "unmounted $m"; done

# 3. processes: rbd-fuse (or rbd-nbd) clients of this cluster, then daemons
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_pid() { # PID NAME
  local pid=$1 name=$2 s=${EPOCHREALTIME/./} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
  log "stopped $name ($pid) in $(((${EPOCHREALTIME/./} - s) / 1000))ms"
}
for d in /proc/[0-9]*; do
  { read -r comm <"$d/comm"; } 2>/dev/null || continue
  case "$comm" in rbd-fuse | rbd-nbd) ;; *) continue ;; esac
  # a client of this cluster names the dir in its arguments or environment
  if grep -qsF "$CEPH_DIR/" "$d/cmdline" "$d/environ"; then
    stop_pid "${d#/proc/}" "$comm"
  fi
done
stop_pidfile() {
  local f=$1 pid comm
  pid=$(cat "$f" 2>/dev/null) || return 0
  if [ -n "$pid" ] && comm=$(cat "/proc/$pid/comm" 2>/dev/null); then
    case "$comm" in ceph-* | rbd-* | rados*) stop_pid "$pid" "$comm" ;; esac
  fi
  rm -f "$f"
}
for pat in 'ceph-client.*' 'ceph-osd.*' 'ceph-mgr.*' 'ceph-mon.*' '*'; do
  for f in "$CEPH_DIR"/run/$pat.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
done

# fuse mounts left behind by clients that just exited
findmnt -rn -o TARGET | awk -v d="$CEPH_DIR/" 'index($1, d) == 1' | sort -r |
  while read -r m; do unmount "$m" && log "unmounted $m"; done

if [ "$KEEP" = 1 ]; then
  log "kept $CEPH_DIR"
else
  rm -rf --one-file-system "${CEPH_DIR:?}" || log "could not remove all of $CEPH_DIR"
fi
log "done in $(((${EPOCHREALTIME/./} - t0) / 1000))ms"
