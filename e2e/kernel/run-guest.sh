#!/bin/bash
# Boot Debian's stock kernel in a throw-away QEMU guest whose root is this
# machine's / (9p, read-only, RAM overlay in the guest) and run one payload
# script in it. Host and guest share no network (-nic none): results come
# back through a writable 9p share (the run directory) and the console.
#
# usage: run-guest.sh --rundir DIR --payload SCRIPT [--timeout SEC]
#                     [--mem MiB] [--smp N] [--env VAR=VALUE]...
#
#   --rundir   a new directory under $KERNEL_BASE/out; the guest sees it at
#              the same path and writes guest.log, rc, dmesg.txt there; the
#              host adds console.log and qemu.txt (wall time, max RSS)
#   --payload  script run by bash in the guest, as root, with GUEST_OUT set
#   --env      exported in the guest before the payload runs
# run-guest.sh --check only says whether a guest can boot here (and why not).
# Settings: KERNEL_BASE (default /tmp/rbdcsi-kernel), KERNEL_ACCEL
#   (auto: kvm only where the CPU has VMX/SVM and /dev/kvm is usable, else
#   tcg), KVER (default: the newest /lib/modules/6.1.0-*-amd64).
# Exit: the payload's exit code; 97 when the guest did not report one
# (boot failure or timeout: see console.log).
set -euo pipefail
# one function: bash reads it whole, so editing this file during a run is safe
main() {
  local HERE BASE RUNDIR= PAYLOAD= TIMEOUT=1800 MEM=2560 SMP=2 envs=()
  HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  BASE=${KERNEL_BASE:-/tmp/rbdcsi-kernel}
  if [ "${1:-}" = --check ]; then
    local why
    why=$(qemu_problem "${KVER:-$(guest_kernel)}") || { echo "run-guest: qemu cannot run here: $why" >&2; return 3; }
    echo "run-guest: a guest can boot here (accel $(pick_accel))"
    return 0
  fi
  while [ $# -gt 0 ]; do
    case "$1" in
      --rundir) RUNDIR=$2; shift ;;
      --payload) PAYLOAD=$2; shift ;;
      --timeout) TIMEOUT=$2; shift ;;
      --mem) MEM=$2; shift ;;
      --smp) SMP=$2; shift ;;
      --env) envs+=("$2"); shift ;;
      *) echo "run-guest: unknown argument $1" >&2; return 2 ;;
    esac
    shift
  done
  [ -n "$RUNDIR" ] && [ -n "$PAYLOAD" ] || { echo "run-guest: --rundir and --payload are required" >&2; return 2; }
  case "$RUNDIR" in "$BASE"/out/*) ;; *) echo "run-guest: --rundir must be under $BASE/out" >&2; return 2 ;; esac
  [ ! -e "$RUNDIR/console.log" ] || { echo "run-guest: $RUNDIR already holds a run" >&2; return 2; }

  local KVER ACCEL problem
  KVER=${KVER:-$(guest_kernel)}
  problem=$(qemu_problem "$KVER") || { echo "run-guest: qemu cannot run here: $problem" >&2; return 3; }
  ACCEL=$(pick_accel)

  # the guest runs a copy of the recipe: edits during a run do not reach it
  mkdir -p "$RUNDIR/recipe"
  cp -p "$HERE"/*.sh "$RUNDIR/recipe/"
  {
    printf 'export GUEST_PAYLOAD=%q\n' "$PAYLOAD"
    for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
  } >"$RUNDIR/recipe/env.sh"

  local INITRD=$BASE/build/initramfs-$KVER.cpio.gz
  if [ ! -s "$INITRD" ] || [ "$HERE/initramfs-init.sh" -nt "$INITRD" ] || [ "$HERE/build-initramfs.sh" -nt "$INITRD" ]; then
    "$HERE/build-initramfs.sh" "$KVER" "$INITRD"
  fi

  local accel_args=(-machine q35 -accel tcg,tb-size=256 -cpu max)
  if [ "$ACCEL" = kvm ]; then accel_args=(-machine q35 -accel kvm -cpu host); fi
  local outroot=$BASE/out
  local qemu=(qemu-system-x86_64 -name rbdcsi-guest "${accel_args[@]}" -smp "$SMP" -m "$MEM"
    -nodefaults -no-user-config -display none -monitor none -serial stdio -nic none -no-reboot
    -kernel "/boot/vmlinuz-$KVER" -initrd "$INITRD"
    -append "console=ttyS0,115200 panic=-1 quiet rbdcsi.init=$RUNDIR/recipe/guest-init.sh rbdcsi.outdir=$outroot rbdcsi.rundir=$RUNDIR"
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$outroot,mount_tag=out,security_model=none,multidevs=remap"
    -device virtio-rng-pci)
  printf '%q ' "${qemu[@]}" >"$RUNDIR/qemu-cmdline.txt"

  local t0=$SECONDS qrc=0
  echo "[run-guest] $(basename "$RUNDIR"): accel=$ACCEL smp=$SMP mem=${MEM}M kernel=$KVER timeout=${TIMEOUT}s" >&2
  # nice: the machine is shared; timeout: a hung guest cannot outlive the run
  set +e
  nice -n 10 /usr/bin/time -f '%e s wall, %M KiB max RSS' -o "$RUNDIR/qemu.txt" \
    timeout --kill-after=30 "$TIMEOUT" "${qemu[@]}" </dev/null 2>&1 |
    while IFS= read -r line || [ -n "$line" ]; do
      printf '[%5ds] %s\n' $((SECONDS - t0)) "${line%$'\r'}"
    done >"$RUNDIR/console.log"
  qrc=${PIPESTATUS[0]}
  set -e
  echo "qemu exit $qrc (124: timeout after ${TIMEOUT}s)" >>"$RUNDIR/qemu.txt"
  if [ ! -s "$RUNDIR/rc" ]; then
    echo "[run-guest] the guest reported no result (qemu exit $qrc; 124 = timeout after ${TIMEOUT}s); last console lines:" >&2
    tail -n 15 "$RUNDIR/console.log" >&2
    return 97
  fi
  echo "[run-guest] $(basename "$RUNDIR"): payload exit $(cat "$RUNDIR/rc") in $((SECONDS - t0))s ($(head -n 1 "$RUNDIR/qemu.txt"))" >&2
  return "$(cat "$RUNDIR/rc")"
}

guest_kernel() {
  # shellcheck disable=SC2012 # names only, no odd characters
  ls /lib/modules 2>/dev/null | grep -E '^6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n 1
}

# qemu_problem KVER: prints why no guest can boot here, and fails; silent
# and successful when everything needed is present
qemu_problem() {
  local kver=$1
  command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not installed (package qemu-system-x86)"; return 1; }
  [ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] && [ -d "/lib/modules/$kver" ] ||
    { echo "no Debian 6.1 kernel in /boot and /lib/modules (package linux-image-amd64)"; return 1; }
  [ -e "/lib/modules/$kver/kernel/drivers/block/rbd.ko" ] || { echo "/lib/modules/$kver has no rbd.ko"; return 1; }
  command -v busybox >/dev/null || { echo "busybox not installed (package busybox-static)"; return 1; }
  [ "$(id -u)" -eq 0 ] || { echo "must run as root (the 9p root share must read every file)"; return 1; }
  return 0
}

# pick_accel: KVM only with hardware virtualisation. A /dev/kvm without
# VMX/SVM (kvm-pvm, as on these machines) cannot boot a stock kernel.
pick_accel() {
  case "${KERNEL_ACCEL:-auto}" in
    tcg | kvm) echo "$KERNEL_ACCEL" ;;
    *)
      if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo tcg; fi
      ;;
  esac
}

main "$@"
