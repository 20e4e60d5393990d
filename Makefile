# rbd-csi build and test entry points. go-ceph must be built with the tag of
# the Ceph release whose libraries are installed: `pacific` for Debian 12's
# Ceph 16.2. Override with `make GO_TAGS=quincy ...` on newer systems.
GO        ?= go
GO_TAGS   ?= pacific
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/rbd-csi/rbd-csi/internal/version.Version=$(VERSION)
GOFLAGS_BUILD := -tags $(GO_TAGS) -trimpath -ldflags "$(LDFLAGS)"
# Go's own install location, for shells whose PATH lacks it
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build build-deps deps csictl test unit vet fmt-check bench demo clean

## deps: install the Debian packages the build, the local Ceph and the node
## data path need (e2e/ceph/install.sh; idempotent, a dpkg query when done).
## demo, test, bench, chaos and fuzz run it first, so a fresh machine needs
## nothing else.
deps:
	@bash e2e/ceph/install.sh

## build-deps: fail in one line, naming the fix, when go-ceph's cgo build
## would fail (no Go, no C compiler, no librados/librbd headers)
build-deps:
	@bash e2e/ceph/check-build.sh

all: build

## build: the driver binary, bin/rbd-csi
build: build-deps
	$(GO) build $(GOFLAGS_BUILD) -o bin/rbd-csi ./cmd/rbd-csi

## csictl: the operator CLI, bin/csictl
csictl:
	$(GO) build -trimpath -o bin/csictl ./proto-tools/csictl

## test: unit tests, integration tests and csi-sanity against a real Ceph
## (started and stopped by the script when CEPH_MON_HOST is not set)
test: deps vet fmt-check
	GO_TAGS=$(GO_TAGS) bash e2e/run-tests.sh

## unit: only the tests that need no Ceph cluster (they skip the others)
unit: build-deps
	env -u CEPH_MON_HOST -u CEPH_ADMIN_KEY $(GO) test -tags $(GO_TAGS) -count=1 ./...

vet: build-deps
	$(GO) vet -tags $(GO_TAGS) ./...

fmt-check:
	@out=$$(gofmt -l cmd internal e2e proto-tools); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: driver vs raw go-ceph (controller: round trips, 500 calls per
## phase in 3 runs with their spread, snapshots, CPU per pair, RSS against
## a raw go-ceph process's) and driver vs raw commands (node, fuse), then
## bench-kernel (BENCH_KERNEL=0 skips it). Table and latency histograms:
## bin/bench-results/<time>/. BENCH_ARGS adds flags (bin/rbd-csi-bench
## -help), e.g. "-runs 5".
BENCH_KERNEL ?= 1
BENCH_ARGS ?=
bench: deps build
	GO_TAGS=$(GO_TAGS) bash e2e/bench.sh -count 500 -runs 3 -snap-count 200 -footprint-pairs 1000 $(BENCH_ARGS)
	if [ "$(BENCH_KERNEL)" = 1 ]; then $(MAKE) bench-kernel; fi

## bench-scale (not in CI): a pool of 10,000 driver-made volumes; CreateVolume
## p50 there against an empty pool, ListVolumes walk, GetCapacity, controller
## restart, RSS slope (e2e/bench/scale.go)
bench-scale: deps build
	GO_TAGS=$(GO_TAGS) bash e2e/bench.sh -scale 10000 $(BENCH_ARGS)

## bench-kernel: the node phases with krbd and rbd-nbd (stage+publish and
## throughput, driver against by hand) in a guest with Debian's kernel
bench-kernel:
	GO_TAGS=$(GO_TAGS) KERNEL_SUITES=bench bash e2e/kernel/test-kernel.sh

## demo: a local Ceph, the driver, and one volume walked through its life
demo: deps build csictl
	bash e2e/demo.sh

## chaos: the fault-injection suite (e2e/chaos) against a real Ceph; one
## FIGURE line per scenario (started and stopped here without CEPH_MON_HOST)
chaos: deps build
	GO_TAGS=$(GO_TAGS) RBD_CSI_BIN=$(CURDIR)/bin/rbd-csi bash e2e/chaos.sh

## test-kernel: the node path (krbd, rbd-nbd) on a real kernel: node e2e,
## csi-sanity and the node chaos scenarios in QEMU guests running Debian's
## stock kernel, each with its own Ceph (e2e/kernel/README.md)
test-kernel:
	GO_TAGS=$(GO_TAGS) bash e2e/kernel/test-kernel.sh

## fuzz: every fuzz target for FUZZTIME each (default 10s); no finding allowed
fuzz: deps build-deps
	GO_TAGS=$(GO_TAGS) bash e2e/fuzz.sh

.PHONY: chaos fuzz test-kernel bench-kernel bench-scale

clean:
	rm -rf bin

# Helm chart, deploy/ manifests, images and the Kubernetes e2e (make e2e)
include e2e/k8s/k8s.mk
