#!/bin/bash
# Stop or restart only the monitor of the cluster made by up.sh, for
# fault-injection tests (e.g. "monitor down for 30 s"). The mon keeps its
# store in $CEPH_DIR/mon, so a restart keeps the cluster state; the OSD and
# the mgr keep running and reconnect by themselves.
#
# usage: mon.sh stop | start | restart | status
#   stop     TERM the ceph-mon from its pid file, wait until it is gone
#   start    start ceph-mon again, wait until it answers (up to CEPH_MON_WAIT s)
#   status   print "running PID" or "stopped"; exit 0 when running
# Settings: CEPH_DIR (default /tmp/rbdcsi-ceph), CEPH_MON_WAIT (default 60)
set -euo pipefail

CEPH_DIR=${CEPH_DIR:-/tmp/rbdcsi-ceph}
CEPH_DIR=${CEPH_DIR%/}
WAIT=${CEPH_MON_WAIT:-60}
MON_ID=a
export CEPH_CONF=$CEPH_DIR/ceph.conf
# CEPH_KEYRING (exported by the env file) overrides the keyring of every Ceph
# program, daemons included: a daemon started with it cannot log in
unset CEPH_ARGS CEPH_KEYRING
PIDFILE=$CEPH_DIR/run/ceph-mon.$MON_ID.pid

log() { echo "[ceph-mon] $*"; }
die() { echo "[ceph-mon] error: $*" >&2; exit 1; }
[ -f "$CEPH_CONF" ] || die "no cluster at $CEPH_DIR (missing $CEPH_CONF)"

alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# prints the pid of the running monitor of this cluster, if any
mon_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ceph-mon ] || return 1
  echo "$pid"
}

stop() {
  local pid i s=${EPOCHREALTIME/./}
  if ! pid=$(mon_pid); then log "already stopped"; return 0; fi
  kill -TERM "$pid"
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid"; sleep 0.2; fi
  rm -f "$PIDFILE"
  log "stopped ceph-mon ($pid) in $(((${EPOCHREALTIME/./} - s) / 1000))ms"
}

start() {
  local pid s=${EPOCHREALTIME/./}
  if pid=$(mon_pid); then log "already running ($pid)"; return 0; fi
  if ! ceph-mon -i "$MON_ID" 2>>"$CEPH_DIR/log/daemons.stderr"; then
    tail -n 3 "$CEPH_DIR/log/daemons.stderr" >&2
    die "ceph-mon failed to start (port taken by another cluster? logs: $CEPH_DIR/log)"
  fi
  local deadline=$((SECONDS + WAIT))
  until ceph --connect-timeout 2 mon stat >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "the monitor did not answer within ${WAIT}s"
    sleep 0.2
  done
  pid=$(mon_pid) || die "the monitor is not running"
  log "started ceph-mon ($pid), answering after $(((${EPOCHREALTIME/./} - s) / 1000))ms"
}

case "${1:-}" in
  stop) stop ;;
  start) start ;;
  restart) stop; start ;;
  status)
    if pid=$(mon_pid); then echo "running $pid"; else echo stopped; exit 1; fi ;;
  *) echo "usage: $0 stop|start|restart|status" >&2; exit 2 ;;
esac
