package ceph

import (
	"context"
	"time"
)

// SnapInfo describes one RBD snapshot in the user namespace.
type SnapInfo struct {
	ID      uint64
	Name    string
	Size    uint64    // the image's size when the snapshot was taken
	Created time.Time // when Ceph took the snapshot
	// Depth counts the ancestors the snapshot's image reads through (0 for
	// an image that is no clone): a clone of this snapshot has Depth+1.
	// Reported by StatSnap, and by CreateSnap when asked (MeasureDepth;
	// -1 otherwise), which open the image anyway, so that callers need no
	// separate CloneDepth.
	Depth int
	// ImageMetadata is the image-meta of the snapshot's image (its owner
	// record and wrapped key), reported by StatSnap, which has the image
	// open anyway: callers need no separate StatImage.
	ImageMetadata map[string]string
}

// DepthWalk says whether CreateSnap measures the image's clone depth:
// free for an image that is no clone, an open per ancestor for a clone.
type DepthWalk bool

const (
	// SkipDepth leaves SnapInfo.Depth at -1.
	SkipDepth DepthWalk = false
	// MeasureDepth fills SnapInfo.Depth.
	MeasureDepth DepthWalk = true
)

// Parent is the image and snapshot a clone reads unwritten data through.
type Parent struct {
	Pool    string
	Image   string // empty once the parent image is in the trash
	ImageID string
	Snap    string // the parent snapshot's name (its trash name once removed)
	InTrash bool   // the parent image is in the RBD trash
}

// CloneSpec is what CloneImage makes.
type CloneSpec struct {
	Features Features
	DataPool string
	// Metadata is written to the clone right after it is created.
	Metadata map[string]string
}

// SnapshotBackend is the part of Backend that works with snapshots, clones
// and flattening. Clones are always clone format 2: a parent snapshot needs
// no protection, can be removed while clones exist (librbd moves it to the
// snapshot trash namespace until the last clone is gone), and its image can
// sit in the RBD trash while clones still read through it.
type SnapshotBackend interface {
	// CreateSnap takes the snapshot, or returns the existing one of that
	// name: creating is idempotent.
	CreateSnap(ctx context.Context, cr Credentials, ref ImageRef, snap string, depth DepthWalk) (SnapInfo, error)
	// StatSnap returns ErrNotFound when the image or the snapshot is missing;
	// the answer carries the image's metadata.
	StatSnap(ctx context.Context, cr Credentials, ref ImageRef, snap string) (SnapInfo, error)
	// ListSnaps names the image's snapshots in the user namespace (those
	// `rbd snap ls` shows). ErrNotFound when the image is missing.
	ListSnaps(ctx context.Context, cr Credentials, ref ImageRef) ([]string, error)
	// RemoveSnap removes the snapshot; one that clones still read through
	// moves to the snapshot trash namespace. ErrNotFound when it is missing.
	RemoveSnap(ctx context.Context, cr Credentials, ref ImageRef, snap string) error
	// CloneImage makes child a format-2 clone of parent@snap and writes
	// spec.Metadata to it. ErrExists, without touching it, when the child's
	// name is taken; ErrNotFound when the parent or its snapshot is missing.
	CloneImage(ctx context.Context, cr Credentials, parent ImageRef, snap string, child ImageRef, spec CloneSpec) error
	// FlattenImage copies the parent's data into the image and detaches it.
	// With async it queues a ceph-mgr task (rbd_support) and returns at once,
	// or ErrNoManager when no mgr is active. An image without a parent is
	// success.
	FlattenImage(ctx context.Context, cr Credentials, ref ImageRef, async bool) error
	// CloneDepth counts the image's ancestors: 0 for an image that is no
	// clone.
	CloneDepth(ctx context.Context, cr Credentials, ref ImageRef) (int, error)
}
