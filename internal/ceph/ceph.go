// Package ceph defines what the driver needs from a Ceph cluster, as a Go
// interface with no cgo in it, so that parameter validation, the RPC handlers
// and their unit tests build without librados. The real implementation lives
// in package librbd (go-ceph); a fake for unit tests lives in cephfake.
package ceph

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Credentials are a cephx identity. Key is secret: Credentials never prints it.
type Credentials struct {
	User string // without the "client." prefix
	Key  string
}

// String redacts the key so that a stray %v never leaks it into a log.
func (c Credentials) String() string { return "client." + c.User + " (key redacted)" }

// GoString redacts the key for %#v as well.
func (c Credentials) GoString() string { return c.String() }

// Cluster says how to reach one Ceph cluster.
type Cluster struct {
	// ID names the cluster in the driver's cluster config; empty for a
	// cluster named only by its monitors (legacy in-tree parameters).
	ID             string
	Monitors       []string
	RadosNamespace string
}

// Key identifies the cluster for connection reuse.
func (c Cluster) Key() string {
	return c.ID + "|" + strings.Join(c.Monitors, ",") + "|" + c.RadosNamespace
}

// ImageRef locates one RBD image.
type ImageRef struct {
	Cluster Cluster
	Pool    string
	Name    string
}

// String is the image spec an operator types into the rbd CLI.
func (r ImageRef) String() string {
	if r.Cluster.RadosNamespace != "" {
		return r.Pool + "/" + r.Cluster.RadosNamespace + "/" + r.Name
	}
	return r.Pool + "/" + r.Name
}

// ImageSpec is what CreateImage makes.
type ImageSpec struct {
	Size     uint64
	Features Features
	DataPool string
	// Metadata is written to the image (rbd image-meta) right after creation.
	Metadata map[string]string
}

// ImageHeader is the part of ImageInfo an image's header answers without
// the image being opened.
type ImageHeader struct {
	ID       string
	Size     uint64
	Order    uint8 // log2 of the object size
	Features Features
	// HasParent says the image is a clone not flattened yet: what it does
	// not hold itself reads from its parent.
	HasParent   bool
	Metadata    map[string]string
	ClusterFSID string
}

// ByteRange is a span of an image's bytes.
type ByteRange struct {
	Offset, Length uint64
}

// ImageInfo is what the driver reads back from an existing image.
type ImageInfo struct {
	Name     string
	ID       string
	Size     uint64
	Features Features
	DataPool string // empty when the image has no separate data pool
	Metadata map[string]string
	Parent   *Parent // nil when the image is no clone (or was flattened)
	// ClusterFSID is the fsid of the cluster holding the image, which tells
	// apart two clusters with the same pool and image names.
	ClusterFSID string
}

// ImageEntry is one image of a pool's image directory.
type ImageEntry struct {
	Name string
	ID   string
}

// TrashEntry is one image in a pool's RBD trash.
type TrashEntry struct {
	ID           string
	Name         string
	DeletionTime time.Time
}

// PoolUsage is the capacity view of one pool.
type PoolUsage struct {
	UsedBytes  uint64
	MaxAvail   uint64 // what the cluster can still store in the pool, after replication
	QuotaBytes uint64 // 0 = no quota
}

// Available is what a new volume can use: the pool's free space, capped by
// what its quota leaves.
func (u PoolUsage) Available() uint64 {
	if u.QuotaBytes == 0 {
		return u.MaxAvail
	}
	if u.UsedBytes >= u.QuotaBytes {
		return 0
	}
	return min(u.MaxAvail, u.QuotaBytes-u.UsedBytes)
}

// Watcher is a client that has an image open.
type Watcher struct {
	Addr   string
	Client uint64
}

// Backend is the set of Ceph operations the driver performs. Every call is
// bounded by ctx: an implementation returns when ctx is done even if Ceph has
// not answered, with an error that wraps ErrTimeout.
type Backend interface {
	// CreateImage creates the image and writes spec.Metadata to it. It returns
	// ErrExists, without touching the image, when the name is taken.
	CreateImage(ctx context.Context, cr Credentials, ref ImageRef, spec ImageSpec) error
	// StatImage returns ErrNotFound when there is no such image.
	StatImage(ctx context.Context, cr Credentials, ref ImageRef) (ImageInfo, error)
	// ReadHeader returns what the image's header says, without opening the
	// image (two reads: its ID, then its header), for callers that need no
	// parent, data pool or snapshot of it. ErrNotFound when there is no
	// such image.
	ReadHeader(ctx context.Context, cr Credentials, ref ImageRef) (ImageHeader, error)
	// Unwritten reports whether nothing was ever written to the image
	// within ranges, so that they read as zeros: none of the data objects
	// holding them exists. It answers false, never wrongly true, for what
	// it cannot tell from the objects alone (a clone, a separate data pool,
	// striping). h is the image's header, from ReadHeader.
	Unwritten(ctx context.Context, cr Credentials, ref ImageRef, h ImageHeader, ranges []ByteRange) (bool, error)
	// SetMetadata writes the keys given; other keys are left alone.
	SetMetadata(ctx context.Context, cr Credentials, ref ImageRef, md map[string]string) error
	// RemoveMetadata removes one key; a key that is not there is success.
	RemoveMetadata(ctx context.Context, cr Credentials, ref ImageRef, key string) error
	// ResizeImage grows the image to size bytes.
	ResizeImage(ctx context.Context, cr Credentials, ref ImageRef, size uint64) error
	// RemovePartialImage removes what a creation interrupted half way left
	// behind under ref's name, and finishes removals of that name an earlier
	// call was killed in. ErrNotFound when nothing is there; ErrInProgress,
	// touching nothing, while the pieces are younger than the backend's
	// grace period (they may be a create that is still running).
	RemovePartialImage(ctx context.Context, cr Credentials, ref ImageRef) error
	// TrashImage moves the image to the pool's trash and returns its image ID.
	// When an earlier attempt already moved it there (this completes a move
	// that attempt was killed in), it returns the IDs of every trash entry
	// under the name, so a retry can schedule the purge the earlier attempt
	// never did: a name is reused when a volume is deleted and created again,
	// and nothing tells the entry of the killed attempt from those of earlier
	// deletions, whose purges are still pending or were lost with a restart.
	// ErrNotFound when the image is neither in the pool nor in its trash,
	// ErrBusy when a client has it open.
	TrashImage(ctx context.Context, cr Credentials, ref ImageRef) ([]string, error)
	// ListTrash lists the trash of the pool (and the cluster's namespace).
	ListTrash(ctx context.Context, cr Credentials, cluster Cluster, pool string) ([]TrashEntry, error)
	// PurgeTrash removes one trashed image. With async it hands the removal to
	// the ceph-mgr (rbd_support task) and returns ErrNoManager when there is no
	// manager to take it; without, it removes synchronously.
	PurgeTrash(ctx context.Context, cr Credentials, cluster Cluster, pool, id string, async bool) error
	// ListImages lists image names in the pool (and namespace), sorted.
	ListImages(ctx context.Context, cr Credentials, cluster Cluster, pool string) ([]string, error)
	// ListImageIDs lists the format 2 images of the pool (and namespace),
	// name and image ID, sorted by name, from the pool's image directory
	// without opening any image.
	ListImageIDs(ctx context.Context, cr Credentials, cluster Cluster, pool string) ([]ImageEntry, error)
	// MetadataByID reads one image-meta key of the images with the given
	// IDs without opening them and returns the values by image ID. Images
	// without the key, or gone, are left out.
	MetadataByID(ctx context.Context, cr Credentials, cluster Cluster, pool, key string, ids []string) (map[string]string, error)
	// PoolUsage reports the pool's capacity.
	PoolUsage(ctx context.Context, cr Credentials, cluster Cluster, pool string) (PoolUsage, error)
	// RBDPools lists, sorted, the cluster's pools with the rbd application
	// enabled (`rbd pool init` or `ceph osd pool application enable`).
	RBDPools(ctx context.Context, cr Credentials, cluster Cluster) ([]string, error)
	// Watchers lists the clients, other than this process, that have the
	// image open.
	Watchers(ctx context.Context, cr Credentials, ref ImageRef) ([]Watcher, error)
	// PoolID resolves a pool name; ErrNotFound when the pool does not exist.
	PoolID(ctx context.Context, cr Credentials, cluster Cluster, pool string) (int64, error)
	// PoolName resolves a pool ID; ErrNotFound when the pool does not exist.
	PoolName(ctx context.Context, cr Credentials, cluster Cluster, id int64) (string, error)
	SnapshotBackend
	AttachBackend
}

// Errors every Backend wraps, so callers can classify failures with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrAuth        = errors.New("authentication failed")
	ErrPermission  = errors.New("permission denied")
	ErrTimeout     = errors.New("timed out")
	ErrUnavailable = errors.New("cluster unavailable")
	ErrBusy        = errors.New("in use")
	ErrNoSpace     = errors.New("no space left")
	ErrNoManager   = errors.New("no active ceph-mgr")
	ErrInvalid     = errors.New("invalid argument")
	// ErrInProgress: what looks like the remains of an interrupted create
	// is young enough to be a create still running (another controller, or
	// a call of this one that its caller's deadline cut off while librados
	// went on), so it is left alone.
	ErrInProgress = errors.New("still being created")
)

// OpError carries the operation and object of a failed Ceph call, wrapping
// one of the sentinel errors above (or the raw error when none applies).
type OpError struct {
	Op     string // e.g. "create image"
	Target string // e.g. "kube/csi-vol-..." or "cluster 1a2b..."
	Err    error
}

func (e *OpError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Target, e.Err) }

// Unwrap lets errors.Is see the sentinel.
func (e *OpError) Unwrap() error { return e.Err }
