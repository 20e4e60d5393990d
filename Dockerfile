# rbd-csi driver image: one binary for the controller (--mode=controller) and
# the node plugin (--mode=node).
#
#   docker build -t rbd-csi:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#   buildah bud --layers -t rbd-csi:dev .          (what e2e/k8s/images.sh does)
#
# Kept within what buildah 1.28 (Debian 12) understands: no heredocs, no
# COPY --link, tag-pinned FROM lines.

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: cgo against the distribution's librados/librbd -----------------
FROM ${GO_IMAGE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends librados-dev librbd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# go-ceph build tag of the Ceph release in the base image (Debian 12: Pacific)
ARG GO_TAGS=pacific
ARG VERSION=dev
ARG GOPROXY
ENV CGO_ENABLED=1 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY cmd/ cmd/
COPY internal/ internal/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -tags "${GO_TAGS}" -trimpath \
      -ldflags "-s -w -X github.com/rbd-csi/rbd-csi/internal/version.Version=${VERSION}" \
      -o /out/rbd-csi ./cmd/rbd-csi \
 && /out/rbd-csi --version

# --- runtime: only what the node data path runs --------------------------------
# librados2/librbd1: the driver (cgo); rbd-nbd and rbd-fuse (+ fuse3): those
# mappers; e2fsprogs/xfsprogs: mkfs, fsck, resize; util-linux/mount: losetup,
# blkid, mount; cryptsetup-bin: LUKS2 of encrypted volumes. The krbd mapper writes to sysfs and needs no rbd CLI, so
# ceph-common (and its Python) stays out.
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librados2 librbd1 rbd-nbd rbd-fuse fuse3 \
      e2fsprogs xfsprogs util-linux mount cryptsetup-bin ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/ceph /var/lib/rbd-csi
COPY --from=builder /out/rbd-csi /usr/local/bin/rbd-csi
ARG VERSION=dev
LABEL org.opencontainers.image.title="rbd-csi" \
      org.opencontainers.image.description="CSI driver for Ceph RBD" \
      org.opencontainers.image.source="https://github.com/rbd-csi/rbd-csi" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["/usr/local/bin/rbd-csi"]
