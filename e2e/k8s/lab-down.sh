#!/bin/bash
# Stop the lab made by lab-up.sh and remove its state. Idempotent.
#   1. stop the kubelet (so that it restarts nothing), then every container
#      of the lab's containerd, then the control plane, etcd and containerd,
#      all by their pid files
#   2. stop leftover containerd shims of this lab (their command line names
#      the lab's containerd socket)
#   3. detach the loop devices and stop the rbd-fuse/rbd-nbd processes of
#      the lab's node plugin; unmount everything below $LAB_DIR, deepest
#      first; delete the bridge
#   4. remove the pod cgroups the kubelet made, and $LAB_DIR
# usage: lab-down.sh [--keep]     --keep leaves $LAB_DIR (logs) in place
# Volumes of running pods are not unmounted cleanly here: delete the pods
# and wait for the kubelet first (e2e.sh does) when that matters.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=lab-down
KEEP=0
[ "${1:-}" = --keep ] && KEEP=1
MARK=.rbdcsi-k8s-lab
LAB_DIR=${LAB_DIR%/}

if [ ! -e "$LAB_DIR/$MARK" ]; then
  log "no lab in $LAB_DIR"
  exit 0
fi

# stop NAME: TERM the process of run/NAME.pid, KILL it after 10 s
stop() {
  local f=$LAB_DIR/run/$1.pid pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "killing $1 ($pid)"
      kill -KILL "$pid" 2>/dev/null
      sleep 0.2
    fi
    log "stopped $1"
  fi
  rm -f "$f"
}

stop kubelet
if [ -S "$CONTAINERD_SOCK" ] && ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  tasks=$(ctr_lab task ls -q 2>/dev/null)
  for t in $tasks; do ctr_lab task kill -s SIGKILL "$t" >/dev/null 2>&1; done
  for t in $tasks; do
    for ((i = 0; i < 50; i++)); do
      ctr_lab task delete -f "$t" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  for c in $(ctr_lab container ls -q 2>/dev/null); do ctr_lab container delete "$c" >/dev/null 2>&1; done
  [ -z "$tasks" ] || log "stopped $(echo "$tasks" | wc -w) containers"
fi
for p in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop $p; done

# shims outlive containerd; theirs name this lab's socket
for d in /proc/[0-9]*; do
  case "$(cat "$d/comm" 2>/dev/null)" in containerd-shim*) ;; *) continue ;; esac
  if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | matches -F -- "$CONTAINERD_SOCK"; then
    kill -KILL "${d#/proc/}" 2>/dev/null && log "killed shim ${d#/proc/}"
  fi
done

# Mapper leftovers of a node plugin that died with volumes staged (a failed
# run): loop devices over files below the lab, then the rbd-fuse / rbd-nbd
# processes whose arguments name the lab's state directory. Only the lab's:
# other tests on this machine run their own.
for l in $(losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v d="$LAB_DIR/" 'index($2, d) == 1 {print $1}'); do
  losetup -d "$l" 2>/dev/null && log "detached $l"
done
for d in /proc/[0-9]*; do
  case "$(cat "$d/comm" 2>/dev/null)" in rbd-fuse | rbd-nbd) ;; *) continue ;; esac
  if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | matches -F -- "$LAB_DIR/"; then
    kill -TERM "${d#/proc/}" 2>/dev/null && log "stopped $(cat "$d/comm" 2>/dev/null) ${d#/proc/}"
  fi
done

# mounts below the lab, deepest first (pod volumes, netns, overlay rootfs,
# the kubelet's shared bind mount)
for ((round = 0; round < 3; round++)); do
  mounts=$(awk '{print $5}' /proc/self/mountinfo | grep -F "$LAB_DIR/" | sort -r -u)
  [ -n "$mounts" ] || break
  for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
mountpoint -q "$KUBELET_DIR" && umount -l "$KUBELET_DIR"
ip link del rbdcsi-e2e0 2>/dev/null && log "deleted bridge rbdcsi-e2e0"

# pod cgroups (kubelet with cgroupfs makes /kubepods in every hierarchy)
if ! pgrep -x kubelet >/dev/null; then
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  # fixed paths kubelet and libcni use whatever their configuration
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null
fi
rm -rf /var/lib/cni/results/rbdcsi-e2e-* 2>/dev/null
for l in /var/log/containers/*.log; do
  [ -L "$l" ] && case "$(readlink "$l")" in "$LAB_DIR"/*) rm -f "$l" ;; esac
done
[ -e "$LAB_DIR/made-lib-modules" ] && rmdir /lib/modules 2>/dev/null

if [ "$KEEP" = 1 ]; then
  log "kept $LAB_DIR"
else
  rm -rf --one-file-system "$LAB_DIR" 2>/dev/null || {
    sleep 1
    rm -rf --one-file-system "$LAB_DIR" || log "could not remove all of $LAB_DIR"
  }
  log "removed $LAB_DIR"
fi
