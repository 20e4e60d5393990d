#!/bin/bash
# What `make bench` runs: the driver against baselines measured in the same
# run on the same cluster (see e2e/bench/main.go).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
go build -tags "${GO_TAGS:-pacific}" -o bin/rbd-csi-bench ./e2e/bench
exec e2e/ceph/with-cluster.sh bin/rbd-csi-bench "$@"
