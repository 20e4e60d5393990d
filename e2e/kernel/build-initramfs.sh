#!/bin/bash
# Build the guest's tiny initramfs: static busybox plus the modules needed to
# reach the host root over 9p (virtio-pci, 9p, overlay, virtio-rng). Every
# other module (rbd, nbd, ext4, xfs, ...) is loaded later from the host's
# /lib/modules, seen through 9p.
#
# usage: build-initramfs.sh KVER OUTPUT.cpio.gz
# Needs busybox-static, kmod, cpio, gzip and /lib/modules/KVER.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KVER=${1:?usage: build-initramfs.sh KVER OUTPUT}
OUTF=${2:?usage: build-initramfs.sh KVER OUTPUT}
[ -d "/lib/modules/$KVER" ] || { echo "build-initramfs: no /lib/modules/$KVER (apt-get install linux-image-amd64)" >&2; exit 1; }
BB=$(command -v busybox) || { echo "build-initramfs: no busybox (apt-get install busybox-static)" >&2; exit 1; }
# a dynamic busybox has no libc in the initramfs: PID 1 would not start
if ldd "$BB" >/dev/null 2>&1; then
  echo "build-initramfs: $BB is dynamically linked; install busybox-static" >&2
  exit 1
fi

mkdir -p "$(dirname "$OUTF")"
STAGE=$(mktemp -d "$(dirname "$OUTF")/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,dev,proc,sys,mnt/lower,mnt/rw,newroot,lib/modules}
cp "$BB" "$STAGE/bin/busybox"

# all =m in Debian's config; --show-depends lists them dependencies first
: >"$STAGE/modules.order"
for m in virtio_pci 9pnet_virtio 9p overlay virtio_rng; do
  modprobe -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
  cp "$ko" "$STAGE/lib/modules/"
  basename "$ko" >>"$STAGE/modules.order"
done

install -m 755 "$HERE/initramfs-init.sh" "$STAGE/init"
(cd "$STAGE" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$OUTF.tmp"
mv "$OUTF.tmp" "$OUTF"
