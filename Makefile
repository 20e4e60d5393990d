# rbd-csi build and test entry points. go-ceph must be built with the tag of
# the Ceph release whose libraries are installed: `pacific` for Debian 12's
# Ceph 16.2. Override with `make GO_TAGS=quincy ...` on newer systems.
GO        ?= go
GO_TAGS   ?= pacific
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/rbd-csi/rbd-csi/internal/version.Version=$(VERSION)
GOFLAGS_BUILD := -tags $(GO_TAGS) -trimpath -ldflags "$(LDFLAGS)"

.PHONY: all build csictl test unit vet fmt-check bench demo clean

all: build

## build: the driver binary, bin/rbd-csi
build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/rbd-csi ./cmd/rbd-csi

## csictl: the operator CLI, bin/csictl
csictl:
	$(GO) build -trimpath -o bin/csictl ./proto-tools/csictl

## test: unit tests, integration tests and csi-sanity against a real Ceph
## (started and stopped by the script when CEPH_MON_HOST is not set)
test: vet fmt-check
	GO_TAGS=$(GO_TAGS) bash e2e/run-tests.sh

## unit: only the tests that need no Ceph cluster (they skip the others)
unit:
	env -u CEPH_MON_HOST -u CEPH_ADMIN_KEY $(GO) test -tags $(GO_TAGS) -count=1 ./...

vet:
	$(GO) vet -tags $(GO_TAGS) ./...

fmt-check:
	@out=$$(gofmt -l cmd internal e2e proto-tools); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: driver vs raw go-ceph (controller) and driver vs raw commands (node,
## fuse), then bench-kernel (BENCH_KERNEL=0 skips it)
BENCH_KERNEL ?= 1
bench: build
	GO_TAGS=$(GO_TAGS) bash e2e/bench.sh
	if [ "$(BENCH_KERNEL)" = 1 ]; then $(MAKE) bench-kernel; fi

## bench-kernel: the node phases with krbd and rbd-nbd (stage+publish and
## throughput, driver against by hand) in a guest with Debian's kernel
bench-kernel:
	GO_TAGS=$(GO_TAGS) KERNEL_SUITES=bench bash e2e/kernel/test-kernel.sh

## demo: a local Ceph, the driver, and one volume walked through its life
demo: build csictl
	bash e2e/demo.sh

## chaos: the fault-injection suite (e2e/chaos) against a real Ceph; one
## FIGURE line per scenario (started and stopped here without CEPH_MON_HOST)
chaos: build
	GO_TAGS=$(GO_TAGS) RBD_CSI_BIN=$(CURDIR)/bin/rbd-csi bash e2e/chaos.sh

## test-kernel: the node path (krbd, rbd-nbd) on a real kernel: node e2e,
## csi-sanity and the node chaos scenarios in QEMU guests running Debian's
## stock kernel, each with its own Ceph (e2e/kernel/README.md)
test-kernel:
	GO_TAGS=$(GO_TAGS) bash e2e/kernel/test-kernel.sh

## fuzz: every fuzz target for FUZZTIME each (default 10s); no finding allowed
fuzz:
	GO_TAGS=$(GO_TAGS) bash e2e/fuzz.sh

.PHONY: chaos fuzz test-kernel bench-kernel

clean:
	rm -rf bin

# Helm chart, deploy/ manifests, images and the Kubernetes e2e (make e2e)
include e2e/k8s/k8s.mk
