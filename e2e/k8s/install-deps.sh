#!/bin/bash
# Install the Debian 12 packages the Kubernetes e2e needs, idempotently:
# those of the Ceph tests (e2e/ceph/install.sh: Ceph, rbd-fuse, rbd-nbd,
# librados/librbd headers, filesystem tools, gcc, make) plus the lab's:
#   containerd, runc, containernetworking-plugins   the container runtime
#   etcd-server                                     the API server's store
#   buildah, debootstrap                            image builds without a daemon
#   busybox-static                                  the test pods' image
#   python3, python3-yaml, openssl, iproute2, curl  schemas, PKI, cleanup, probes
#   jq, procps                                      the scenarios' checks
# Packages already installed cost one dpkg query; apt-get update runs only
# when something is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec bash "$HERE/../ceph/install.sh" \
  containerd runc containernetworking-plugins etcd-server \
  buildah debootstrap busybox-static python3 python3-yaml openssl iproute2 curl ca-certificates jq procps "$@"
