#!/bin/bash
# Start a throw-away single-node Ceph Pacific cluster for tests, bound to one
# loopback address (127.0.0.1 by default): 1 mon, 1 mgr, 1 OSD (memstore by
# default), cephx on, no systemd. Creates pool $CEPH_POOL (rbd-initialised) and, by default, a second
# replicated pool $CEPH_DATA_POOL_NAME for `rbd create --data-pool` tests.
# Writes $CEPH_DIR/env (mode 0600, holds the admin key) to `source`.
#
# Settings (environment):
#   CEPH_DIR            cluster directory, wiped first (default /tmp/rbdcsi-ceph).
#                       Keep it short: client admin sockets live in it and unix
#                       socket paths are limited to 107 bytes.
#   CEPH_STORE          memstore (default, data in RAM) | bluestore (sparse file)
#   CEPH_OSD_GB         OSD capacity in GiB (default 8)
#   CEPH_MGR            1 (default) start a ceph-mgr | 0 none (no rbd_support)
#   CEPH_MON_WAIT       seconds to wait for the monitor (default 30; an
#                       emulated guest on a loaded machine needs more)
#   CEPH_MGR_WAIT       seconds to wait for the mgr (default 60); 0 = start it
#                       and return at once (slow emulated guests, e2e/kernel)
#   CEPH_MGR_MODULES    minimal (default: only the always-on modules, faster
#                       start) | all (every installed mgr module)
#   CEPH_POOL           RBD pool (default kube; empty = none)
#   CEPH_DATA_POOL      1 (default) also create the data pool | 0 do not
#   CEPH_DATA_POOL_NAME name of the data pool (default kube-data)
#   CEPH_IP             loopback address of all daemons (default 127.0.0.1).
#                       "auto": a free 127.0.0.N (N=2..254) for a cluster of
#                       its own. When neither CEPH_IP nor the ports are given
#                       and 127.0.0.1's mon ports are taken, auto is used.
#   CEPH_MON_PORT_V1    msgr v1 port of the mon (default 6789)
#   CEPH_MON_PORT_V2    msgr v2 port of the mon (default 3300)
#                       "auto" means the standard port and CEPH_IP=auto
#   CEPH_RESTART        1 = stop a cluster still running in CEPH_DIR first
#                       (default: refuse)
# Runs as root (the tests mount and attach loop devices anyway).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CEPH_DIR=${CEPH_DIR:-/tmp/rbdcsi-ceph}
CEPH_STORE=${CEPH_STORE:-memstore}
CEPH_OSD_GB=${CEPH_OSD_GB:-8}
CEPH_MGR=${CEPH_MGR:-1}
CEPH_MGR_MODULES=${CEPH_MGR_MODULES:-minimal}
CEPH_MGR_WAIT=${CEPH_MGR_WAIT:-60}
CEPH_MON_WAIT=${CEPH_MON_WAIT:-30}
CEPH_POOL=${CEPH_POOL-kube}
CEPH_DATA_POOL=${CEPH_DATA_POOL:-1}
CEPH_DATA_POOL_NAME=${CEPH_DATA_POOL_NAME:-kube-data}
IP=${CEPH_IP:-127.0.0.1}
PORT_V1=${CEPH_MON_PORT_V1:-6789}
PORT_V2=${CEPH_MON_PORT_V2:-3300}
# what is given explicitly must be free; the defaults fall back to a free IP
ADDR_EXPLICIT=0
[ -n "${CEPH_IP:-}${CEPH_MON_PORT_V1:-}${CEPH_MON_PORT_V2:-}" ] && ADDR_EXPLICIT=1
# "auto" ports (older callers): the standard ports on an address of its own
if [ "$PORT_V1" = auto ] || [ "$PORT_V2" = auto ]; then
  [ "$PORT_V1" != auto ] || PORT_V1=6789
  [ "$PORT_V2" != auto ] || PORT_V2=3300
  [ -n "${CEPH_IP:-}" ] || IP=auto
fi
MON_ID=a
MGR_ID=x
MARK=.rbdcsi-ceph # marks a directory made by this script (down.sh checks it)

t0=${EPOCHREALTIME/./}
say() {
  local ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
  printf '[ceph-up %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() { echo "[ceph-up] error: $*" >&2; exit 1; }
# matches GREP-ARGS...: grep -q that reads all of its input, so that under
# pipefail the writer is never killed by SIGPIPE (see e2e/k8s/lib.sh)
matches() { grep "$@" >/dev/null; }

# --- preconditions --------------------------------------------------------
for b in ceph ceph-mon ceph-osd ceph-authtool monmaptool rbd; do
  command -v "$b" >/dev/null || die "$b not found; run $HERE/install.sh"
done
if [ "$CEPH_MGR" = 1 ] && ! command -v ceph-mgr >/dev/null; then
  die "ceph-mgr not found; run $HERE/install.sh or set CEPH_MGR=0"
fi
case "$CEPH_STORE" in memstore | bluestore) ;; *) die "CEPH_STORE must be memstore or bluestore" ;; esac
case "$CEPH_DIR" in /*) ;; *) die "CEPH_DIR must be an absolute path" ;; esac
case "$PORT_V1$PORT_V2" in *[!0-9]*) die "CEPH_MON_PORT_V1/V2 must be port numbers (or auto)" ;; esac
CEPH_DIR=${CEPH_DIR%/}
# $CEPH_DIR/run/ceph-client.admin.<pid>.<cctid>.asok must fit in 107 bytes
[ ${#CEPH_DIR} -le 50 ] || die "CEPH_DIR is too long (${#CEPH_DIR} > 50 chars): unix socket paths would not fit"

# port_busy IP PORT: something accepts connections there
port_busy() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# An old cluster in the same directory: refuse while its daemons live (unless
# CEPH_RESTART=1), otherwise clean it up (mounts, loops, pid files).
if [ -d "$CEPH_DIR" ] && [ -n "$(ls -A "$CEPH_DIR")" ]; then
  [ -e "$CEPH_DIR/$MARK" ] || die "$CEPH_DIR exists, is not empty and was not made by up.sh; refusing to wipe it"
  live=
  for f in "$CEPH_DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ] &&
      case "$(cat "/proc/$pid/comm" 2>/dev/null)" in ceph-* | rbd-*) true ;; *) false ;; esac && live=$f
  done
  if [ -n "$live" ] && [ "${CEPH_RESTART:-0}" != 1 ]; then
    die "a cluster in $CEPH_DIR is still running ($live); run $HERE/down.sh first or set CEPH_RESTART=1"
  fi
  CEPH_DIR=$CEPH_DIR "$HERE/down.sh" >/dev/null
fi
# pick_ip: a loopback address 127.0.0.N whose mon ports are free. Clients
# given host:port talk msgr v1 only to port 6789 (v2 to any other), and only
# v1 fails fast on a wrong key: so keep the standard ports, change the address.
pick_ip() {
  local i n start=$RANDOM
  for ((i = 0; i < 253; i++)); do
    n=$((2 + (start + i) % 253))
    if ! port_busy "127.0.0.$n" "$PORT_V1" && ! port_busy "127.0.0.$n" "$PORT_V2"; then
      IP=127.0.0.$n
      return 0
    fi
  done
  die "no loopback address with free ports $PORT_V1 and $PORT_V2"
}
case "$IP" in
  auto) pick_ip ;;
  127.*) ;;
  *) die "CEPH_IP must be a loopback address (127.x.y.z) or auto" ;;
esac
if port_busy "$IP" "$PORT_V1" || port_busy "$IP" "$PORT_V2"; then
  [ "$ADDR_EXPLICIT" = 0 ] ||
    die "$IP:$PORT_V1 or :$PORT_V2 is in use (another cluster?); set other CEPH_MON_PORT_V1/CEPH_MON_PORT_V2 or CEPH_IP (e.g. auto)"
  pick_ip
  echo "[ceph-up] $PORT_V1/$PORT_V2 on 127.0.0.1 are in use (another cluster?); using $IP"
fi

rm -rf "${CEPH_DIR:?}"
mkdir -p "$CEPH_DIR"/{mon,mgr,osd,run,log,crash}
: >"$CEPH_DIR/$MARK"

# on failure stop whatever was started (background jobs, daemons) but keep
# the files for a post-mortem
on_exit() {
  local rc=$?
  [ "$rc" -eq 0 ] && return
  local j
  for j in $(jobs -p); do kill "$j" 2>/dev/null; done
  CEPH_DIR=$CEPH_DIR CEPH_KEEP_DIR=1 "$HERE/down.sh" >/dev/null 2>&1
  echo "[ceph-up] failed; daemons stopped, logs kept in $CEPH_DIR/log (remove with $HERE/down.sh)" >&2
}
trap on_exit EXIT

export CEPH_CONF=$CEPH_DIR/ceph.conf
# CEPH_KEYRING (exported by the env file) overrides the keyring of every Ceph
# program, daemons included: a daemon started with it cannot log in
unset CEPH_ARGS CEPH_KEYRING

# The mgr imports every module it finds (~4.5 s of CPU for Pacific's 27)
# although only the always-on ones run. Pacific's always-on set (rbd_support,
# with the trash purge tasks, is one of them) gets a directory of its own.
MGR_MODULE_DIR=
MGR_ALWAYS_ON="balancer crash devicehealth orchestrator pg_autoscaler progress rbd_support status telemetry volumes"
if [ "$CEPH_MGR" = 1 ] && [ "$CEPH_MGR_MODULES" = minimal ] &&
  [[ "$(ceph-mgr --version 2>/dev/null)" == "ceph version 16."* ]]; then
  src=/usr/share/ceph/mgr
  MGR_MODULE_DIR=$CEPH_DIR/mgr/modules
  mkdir -p "$MGR_MODULE_DIR"
  for m in mgr_module.py mgr_util.py $MGR_ALWAYS_ON; do
    [ -e "$src/$m" ] || { MGR_MODULE_DIR=; break; }
    ln -s "$src/$m" "$MGR_MODULE_DIR/$m"
  done
fi
FSID=$(cat /proc/sys/kernel/random/uuid)
MON_ADDRS="[v2:$IP:$PORT_V2,v1:$IP:$PORT_V1]"

# --- configuration --------------------------------------------------------
cat >"$CEPH_CONF" <<EOF
[global]
fsid = $FSID
mon host = $MON_ADDRS
mon initial members = $MON_ID
public addr = $IP
cluster addr = $IP
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $CEPH_DIR/\$cluster.\$name.keyring
run dir = $CEPH_DIR/run
pid file = $CEPH_DIR/run/\$cluster-\$name.pid
log file = $CEPH_DIR/log/\$cluster-\$name.log
crash dir = $CEPH_DIR/crash
chdir = ""
# one OSD: size-1 pools, no autoscaling
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
# no optional mgr modules (restful, iostat, nfs); rbd_support is always on
mgr initial modules =
# stay HEALTH_OK on a small dev box
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
$([ "$CEPH_MGR" = 1 ] || printf '%s\n' '# no mgr: no MGR_DOWN warning' 'mon mgr mkfs grace = 31536000')

# Daemons get fixed admin sockets; clients (rbd, rbd-fuse, go-ceph, ...) one
# per process, otherwise a second client logs "(17) File exists".
[client]
admin socket = $CEPH_DIR/run/\$cluster-\$name.\$pid.\$cctid.asok

[mon]
admin socket = $CEPH_DIR/run/\$cluster-\$name.asok
mon data = $CEPH_DIR/mon/\$cluster-\$id
keyring = $CEPH_DIR/mon/\$cluster-\$id/keyring
mon cluster log file = $CEPH_DIR/log/\$cluster.log
# commit map changes (pool create, osd boot, auth, ...) after 0.1 s, not 1 s
paxos propose interval = 0.1

[mgr]
admin socket = $CEPH_DIR/run/\$cluster-\$name.asok
mgr data = $CEPH_DIR/mgr/\$cluster-\$id
$([ -z "$MGR_MODULE_DIR" ] || echo "mgr module path = $MGR_MODULE_DIR")

[osd]
admin socket = $CEPH_DIR/run/\$cluster-\$name.asok
osd data = $CEPH_DIR/osd/\$cluster-\$id
osd objectstore = $CEPH_STORE
osd class load list = *
osd class default list = *
memstore device bytes = $((CEPH_OSD_GB * 1024 * 1024 * 1024))
bluestore block path = $CEPH_DIR/osd/\$cluster-\$id.block
bluestore block size = $((CEPH_OSD_GB * 1024 * 1024 * 1024))
bluestore block create = true
bluestore fsck on mount = false
osd memory target = 1073741824
osd op num shards = 2
osd op num threads per shard = 1
EOF

# --- keys: mon., client.admin and mgr.x all go into the initial mon keyring
umask 077
ADMIN_KEYRING=$CEPH_DIR/ceph.client.admin.keyring
ceph-authtool --create-keyring "$CEPH_DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$ADMIN_KEYRING" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$ADMIN_KEYRING" >/dev/null
if [ "$CEPH_MGR" = 1 ]; then
  ceph-authtool --create-keyring "$CEPH_DIR/ceph.mgr.$MGR_ID.keyring" --gen-key -n "mgr.$MGR_ID" \
    --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$CEPH_DIR/ceph.mgr.$MGR_ID.keyring" >/dev/null
fi
umask 022

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.2 s until it
# succeeds
wait_for() {
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what (logs: $CEPH_DIR/log)"
    sleep 0.2
  done
}

# start_daemon NAME ARGS...: the daemon forks itself once it is set up; a
# non-zero exit (e.g. its port is taken) is fatal
start_daemon() {
  "$@" 2>>"$CEPH_DIR/log/daemons.stderr" && return 0
  tail -n 5 "$CEPH_DIR/log/daemons.stderr" >&2
  die "$1 failed to start (logs: $CEPH_DIR/log)"
}

# --- mon ----------------------------------------------------------------------
monmaptool --create --fsid "$FSID" --addv "$MON_ID" "$MON_ADDRS" "$CEPH_DIR/monmap" >/dev/null
ceph-mon --mkfs -i "$MON_ID" --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/mon.keyring"
start_daemon ceph-mon -i "$MON_ID"
# the mgr's key is in the mon keyring already: start it now, it waits for the
# mon by itself (its python modules take seconds to load anyway)
if [ "$CEPH_MGR" = 1 ]; then
  mkdir -p "$CEPH_DIR/mgr/ceph-$MGR_ID"
  start_daemon ceph-mgr -i "$MGR_ID"
fi
# cheap readiness probe first (a ceph CLI call costs ~0.5 s), then a real one
wait_for "$CEPH_MON_WAIT" "the monitor port" port_busy "$IP" "$PORT_V1"
wait_for "$CEPH_MON_WAIT" "the monitor" ceph --connect-timeout 5 mon stat
say "mon up on $MON_ADDRS"

# --- pools: created in the background while the OSD is being made ----------------
POOLS=()
[ -z "$CEPH_POOL" ] || POOLS+=("$CEPH_POOL")
DATA_POOL=
if [ "$CEPH_DATA_POOL" = 1 ] && [ -n "$CEPH_DATA_POOL_NAME" ]; then
  DATA_POOL=$CEPH_DATA_POOL_NAME
  POOLS+=("$DATA_POOL")
fi
create_pools() {
  local p
  for p in "$@"; do
    ceph osd pool create "$p" 8 8 >>"$CEPH_DIR/log/up.log" 2>&1 || { echo "cannot create pool $p" >&2; return 1; }
  done
}
create_pools "${POOLS[@]}" &
pools_pid=$!

# --- osd ----------------------------------------------------------------------
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_KEY=$(ceph-authtool --gen-print-key)
OSD_ID=$(printf '{"cephx_secret": "%s"}' "$OSD_KEY" | ceph osd new "$OSD_UUID" -i -)
(umask 077 && ceph-authtool --create-keyring "$CEPH_DIR/ceph.osd.$OSD_ID.keyring" \
  -n "osd.$OSD_ID" --add-key "$OSD_KEY" >/dev/null)
mkdir -p "$CEPH_DIR/osd/ceph-$OSD_ID"
ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$CEPH_DIR/log/osd-mkfs.log" 2>&1 ||
  die "ceph-osd --mkfs failed, see $CEPH_DIR/log/osd-mkfs.log"
# ceph-osd forks only after registering itself in the crush map (~2 s): let
# it do that in the background
start_daemon ceph-osd -i "$OSD_ID" &
osd_pid=$!
wait "$pools_pid" || die "pool creation failed (see $CEPH_DIR/log/up.log)"
wait "$osd_pid" || exit 1
say "osd.$OSD_ID started ($CEPH_STORE, ${CEPH_OSD_GB} GiB)"

# `rbd pool init` writes to the pool, so it returns once the OSD is up and the
# PGs are active: run them in parallel, bounded by a timeout.
if [ ${#POOLS[@]} -gt 0 ]; then
  pids=()
  for p in "${POOLS[@]}"; do
    timeout 120 rbd pool init "$p" >>"$CEPH_DIR/log/up.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || die "rbd pool init ${POOLS[$i]} failed or timed out (osd not up? see $CEPH_DIR/log)"
  done
  say "pools ready: ${POOLS[*]}"
else
  osd_up() { ceph osd dump 2>/dev/null | matches "^osd.$OSD_ID up"; }
  wait_for 60 "osd.$OSD_ID" osd_up
  say "osd.$OSD_ID up"
fi

# --- mgr: active, with the rbd_support module answering (trash purge tasks) --
if [ "$CEPH_MGR" = 1 ] && [ "$CEPH_MGR_WAIT" = 0 ]; then
  say "mgr started, not waited for (CEPH_MGR_WAIT=0)"
elif [ "$CEPH_MGR" = 1 ]; then
  wait_for "$CEPH_MGR_WAIT" "the mgr and its rbd_support module" timeout 10 ceph rbd task list
  say "mgr active, rbd_support ready"
fi

# --- env file (holds the admin key: 0600) ---------------------------------
ADMIN_KEY=$(ceph-authtool -p -n client.admin "$ADMIN_KEYRING")
# A client given host:port without a v1:/v2: prefix speaks msgr v1 to port
# 6789 and msgr v2 to any other port: name the port it will get right.
MON_HOST=$IP:$PORT_V1
[ "$PORT_V1" = 6789 ] || MON_HOST=$IP:$PORT_V2
(
  umask 077
  {
    echo "# made by $HERE/up.sh; source it"
    printf 'export CEPH_DIR=%q\n' "$CEPH_DIR"
    printf 'export CEPH_CONF=%q\n' "$CEPH_CONF"
    printf 'export CEPH_KEYRING=%q\n' "$ADMIN_KEYRING"
    printf 'export CEPH_ADMIN_KEY=%q\n' "$ADMIN_KEY"
    printf 'export CEPH_MON_HOST=%q\n' "$MON_HOST"
    printf 'export CEPH_FSID=%q\n' "$FSID"
    printf 'export CEPH_POOL=%q\n' "$CEPH_POOL"
    printf 'export CEPH_DATA_POOL_NAME=%q\n' "$DATA_POOL"
  } >"$CEPH_DIR/env.tmp"
  mv "$CEPH_DIR/env.tmp" "$CEPH_DIR/env"
)
say "ready: source $CEPH_DIR/env"
