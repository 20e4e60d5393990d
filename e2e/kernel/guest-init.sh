#!/bin/bash
# PID 1 in the guest after switch_root (root = the host's / over 9p with a
# RAM overlay). Sets up /run, devpts, /dev/shm and lo, loads the run's
# environment (written by run-guest.sh), runs the payload with its output
# in the results share, saves dmesg and powers off. Never exits: PID 1
# exiting panics the kernel; every path ends in a poweroff.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
umask 022
echo "RBDCSI-GUEST userspace uptime=$(cut -d' ' -f1 /proc/uptime)"

RUNDIR=
for a in $(cat /proc/cmdline); do
  case "$a" in rbdcsi.rundir=*) RUNDIR=${a#*=} ;; esac
done

mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/lock /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
ip link set lo up
hostname rbdcsi-guest

rc=99
if [ -n "$RUNDIR" ] && [ -r "$RUNDIR/recipe/env.sh" ]; then
  # shellcheck source=/dev/null
  . "$RUNDIR/recipe/env.sh"
  export GUEST_OUT=$RUNDIR
  echo "RBDCSI-GUEST payload $GUEST_PAYLOAD uptime=$(cut -d' ' -f1 /proc/uptime)"
  # the payload is a child: bash as PID 1 reaps orphaned daemons meanwhile
  /bin/bash "$GUEST_PAYLOAD" 2>&1 | tee "$RUNDIR/guest.log"
  rc=${PIPESTATUS[0]}
else
  echo "RBDCSI-GUEST FAIL no run environment at $RUNDIR/recipe/env.sh"
fi
echo "$rc" >"$RUNDIR/rc"
dmesg >"$RUNDIR/dmesg.txt" 2>&1
echo "RBDCSI-GUEST done rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
echo o >/proc/sysrq-trigger
sleep 5
busybox poweroff -f
