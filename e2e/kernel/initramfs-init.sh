#!/bin/busybox sh
# PID 1 of the initramfs (busybox only): load the virtio/9p/overlay modules,
# mount the host root read-only over 9p (tag hostroot) under a tmpfs
# overlay, mount the writable results share (tag out) and switch_root into
# the guest init named on the kernel command line (rbdcsi.init=).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "RBDCSI-GUEST initramfs uptime=$(cut -d' ' -f1 /proc/uptime)"

INIT= OUTDIR=
for a in $(cat /proc/cmdline); do
  case "$a" in
    rbdcsi.init=*) INIT=${a#*=} ;;
    rbdcsi.outdir=*) OUTDIR=${a#*=} ;;
  esac
done

fail() { echo "RBDCSI-GUEST FAIL $*"; sleep 2; poweroff -f; }
[ -n "$INIT" ] && [ -n "$OUTDIR" ] || fail "rbdcsi.init= or rbdcsi.outdir= missing on the kernel command line"

for ko in $(cat /modules.order); do
  insmod "/lib/modules/$ko" || echo "insmod $ko failed"
done

# the virtio device can appear a moment after its driver loads
ok=0
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /mnt/lower; then ok=1; break; fi
  sleep 0.25
done
[ $ok = 1 ] || fail "cannot mount the 9p share hostroot"

mount -t tmpfs -o mode=755 tmpfs /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot ||
  fail "overlay mount failed"
mkdir -p "/newroot$OUTDIR"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none,rw out "/newroot$OUTDIR" ||
  fail "cannot mount the 9p results share at $OUTDIR"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/bash "$INIT"
fail "switch_root failed"
