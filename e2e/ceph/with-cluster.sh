#!/bin/bash
# Run a command against a Ceph cluster: the one named by CEPH_MON_HOST and
# CEPH_ADMIN_KEY when they are set, otherwise a throw-away cluster started
# here (installing missing packages when root) and stopped when the command
# ends. Used by `make bench` and `make demo`.
#
#   e2e/ceph/with-cluster.sh CMD [ARGS...]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

if [ -n "${CEPH_MON_HOST:-}" ] && [ -n "${CEPH_ADMIN_KEY:-}" ]; then
  export CEPH_POOL=${CEPH_POOL:-kube}
  exec "$@"
fi

if ! command -v ceph-mon >/dev/null || ! command -v rbd-fuse >/dev/null || [ ! -e /usr/include/rbd/librbd.h ]; then
  [ "$(id -u)" -eq 0 ] || { echo "Ceph packages missing: run sudo $HERE/install.sh" >&2; exit 1; }
  "$HERE/install.sh"
fi
CLUSTER=$(mktemp -d /tmp/rbdcsi.XXXXXX)
trap 'CEPH_DIR=$CLUSTER "$HERE/down.sh" >/dev/null 2>&1 || true' EXIT
export CEPH_MON_PORT_V1=${CEPH_MON_PORT_V1:-auto} CEPH_MON_PORT_V2=${CEPH_MON_PORT_V2:-auto}
unset CEPH_CONF CEPH_KEYRING
CEPH_DIR=$CLUSTER "$HERE/up.sh" >/dev/null
# shellcheck source=/dev/null
. "$CLUSTER/env"
"$@"
