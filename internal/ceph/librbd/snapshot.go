package librbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/ceph/go-ceph/rbd/admin"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
)

// maxWalk stops CloneDepth on a parent loop, which a sane cluster never
// has, rather than walking forever.
const maxWalk = 64

// CreateSnap implements ceph.Backend.
func (b *Backend) CreateSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string, depth ceph.DepthWalk) (ceph.SnapInfo, error) {
	var info ceph.SnapInfo
	err := b.onPool(ctx, "create snapshot of", ref, cr, func(c *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, false, func(img *rbd.Image) error {
			var err error
			info, err = snapInfo(img, snap)
			if errors.Is(err, ceph.ErrNotFound) {
				if _, err := img.CreateSnapshot(snap); err != nil && errno(err) != int(syscall.EEXIST) {
					return err
				}
				info, err = snapInfo(img, snap)
			}
			if err != nil {
				return err
			}
			if depth == ceph.SkipDepth {
				info.Depth = -1
				return nil
			}
			info.Depth, err = depthOf(c, img)
			return err
		})
	})
	return info, err
}

// StatSnap implements ceph.Backend.
func (b *Backend) StatSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string) (ceph.SnapInfo, error) {
	var info ceph.SnapInfo
	err := b.onPool(ctx, "inspect snapshot of", ref, cr, func(c *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, true, func(img *rbd.Image) error {
			var err error
			if info, err = snapInfo(img, snap); err != nil {
				return err
			}
			if info.ImageMetadata, err = img.ListMetadata(); err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
			info.Depth, err = depthOf(c, img)
			return err
		})
	})
	return info, err
}

// snapInfo finds a user-namespace snapshot by name: its ID and size from
// the snapshot list, its creation time from the snapshot's timestamp.
func snapInfo(img *rbd.Image, name string) (ceph.SnapInfo, error) {
	snaps, err := snapshotList(img)
	if err != nil {
		return ceph.SnapInfo{}, err
	}
	for _, s := range snaps {
		if s.Name != name {
			continue
		}
		ts, err := img.GetSnapTimestamp(s.Id)
		if err != nil {
			return ceph.SnapInfo{}, fmt.Errorf("timestamp of snapshot %s: %w", name, err)
		}
		return ceph.SnapInfo{ID: s.Id, Name: s.Name, Size: s.Size, Created: time.Unix(ts.Sec, ts.Nsec)}, nil
	}
	return ceph.SnapInfo{}, fmt.Errorf("snapshot %s: %w", name, ceph.ErrNotFound)
}

// snapshotListTries bounds the retries of snapshotList.
const snapshotListTries = 5

// snapshotList lists the image's snapshots. go-ceph sizes the list with
// one rbd_snap_list call and fills it with a second; a snapshot another
// client adds in between (concurrent CreateSnapshot calls on one source
// volume) makes the second fail with ERANGE, so it is asked again.
func snapshotList(img *rbd.Image) ([]rbd.SnapInfo, error) {
	for try := 1; ; try++ {
		snaps, err := img.GetSnapshotNames()
		if err == nil {
			return snaps, nil
		}
		if errno(err) != int(syscall.ERANGE) || try == snapshotListTries {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
	}
}

// ListSnaps implements ceph.Backend.
func (b *Backend) ListSnaps(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]string, error) {
	var names []string
	err := b.onPool(ctx, "list snapshots of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, true, func(img *rbd.Image) error {
			snaps, err := snapshotList(img)
			if err != nil {
				return err
			}
			// rbd_snap_list includes the trash namespace (snapshots removed
			// while clones read through them, under UUID names).
			for _, s := range snaps {
				ns, err := img.GetSnapNamespaceType(s.Id)
				if err != nil {
					return fmt.Errorf("namespace of snapshot %s: %w", s.Name, err)
				}
				if ns == rbd.SnapNamespaceTypeUser {
					names = append(names, s.Name)
				}
			}
			return nil
		})
	})
	return names, err
}

// RemoveSnap implements ceph.Backend.
func (b *Backend) RemoveSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string) error {
	return b.onPool(ctx, "remove snapshot of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, false, func(img *rbd.Image) error {
			return img.GetSnapshot(snap).Remove()
		})
	})
}

// CloneImage implements ceph.Backend.
func (b *Backend) CloneImage(ctx context.Context, cr ceph.Credentials, parent ceph.ImageRef, snap string, child ceph.ImageRef, spec ceph.CloneSpec) error {
	return b.onPool(ctx, "clone "+parent.String()+"@"+snap+" to", child, cr, func(c *conn, cio *rados.IOContext) error {
		pio, err := c.ioctx(parent.Pool, parent.Cluster.RadosNamespace)
		if err != nil {
			return err
		}
		// A retry after a crash inside the removal of an unfinished clone
		// comes here, not to RemovePartialImage: the name was free again.
		if err := finishRemovals(cio, child.Name); err != nil {
			return err
		}
		err = c.withPoolCheck(dataPoolOf(child.Pool, spec.DataPool), func() error {
			return cloneImage(pio, parent.Name, snap, cio, child.Name, spec)
		})
		if err != nil {
			return err
		}
		failpoint.Crash("clone-before-metadata")
		return writeNewImageMetadata(cio, child.Name, spec.Metadata)
	})
}

func cloneImage(pio *rados.IOContext, parent, snap string, cio *rados.IOContext, name string, spec ceph.CloneSpec) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	// Clone format 2 whatever rbd_default_clone_format and the cluster's
	// min-compat-client say: it is what lets a CSI snapshot and its source
	// volume be deleted while clones of them live (see ceph.SnapshotBackend).
	settings := []struct {
		opt rbd.ImageOption
		val uint64
	}{
		{rbd.ImageOptionFormat, 2},
		{rbd.ImageOptionCloneFormat, 2},
		// A clone needs layering, whatever else the StorageClass asked for.
		{rbd.ImageOptionFeatures, uint64(spec.Features | ceph.FeatureLayering)},
	}
	for _, s := range settings {
		if err := opts.SetUint64(s.opt, s.val); err != nil {
			return err
		}
	}
	if spec.DataPool != "" {
		if err := opts.SetString(rbd.ImageOptionDataPool, spec.DataPool); err != nil {
			return err
		}
	}
	return rbd.CloneImage(pio, parent, snap, cio, name, opts)
}

// FlattenImage implements ceph.Backend.
func (b *Backend) FlattenImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, async bool) error {
	if !async {
		return b.onPool(ctx, "flatten", ref, cr, func(_ *conn, io *rados.IOContext) error {
			err := withImage(io, ref.Name, false, func(img *rbd.Image) error { return img.Flatten() })
			if errno(err) == int(syscall.EINVAL) {
				return nil // no parent: nothing to flatten
			}
			return err
		})
	}
	return b.run(ctx, "schedule flatten of", ref.String(), ref.Cluster, cr, func(c *conn) error {
		if !c.mgrActive() {
			return ceph.ErrNoManager
		}
		_, err := admin.NewFromConn(c.rc).Task().AddFlatten(admin.NewImageSpec(ref.Pool, ref.Cluster.RadosNamespace, ref.Name))
		if errno(err) == int(syscall.ENOENT) && imageHasNoParent(c, ref) {
			return nil // flattened between the caller's check and the task
		}
		return err
	})
}

// imageHasNoParent tells the mgr's "no parent" refusal from a missing image.
func imageHasNoParent(c *conn, ref ceph.ImageRef) bool {
	io, err := c.ioctx(ref.Pool, ref.Cluster.RadosNamespace)
	if err != nil {
		return false
	}
	var p *rbd.ParentInfo
	err = withImage(io, ref.Name, true, func(img *rbd.Image) error {
		var err error
		p, err = img.GetParent()
		return err
	})
	return p == nil && errors.Is(err, rbd.ErrNotFound)
}

// CloneDepth implements ceph.Backend. Each ancestor is opened at the very
// snapshot its child reads through, since an image flattened after that
// snapshot was taken still has its old parent at the snapshot.
func (b *Backend) CloneDepth(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (int, error) {
	depth := 0
	err := b.onPool(ctx, "measure clone depth of", ref, cr, func(c *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, true, func(img *rbd.Image) error {
			var err error
			depth, err = depthOf(c, img)
			return err
		})
	})
	return depth, err
}

// depthOf counts img's ancestors, opening each at the snapshot its child
// reads through; img itself stays open. An image that is no clone costs
// no round trip (librbd has its parent in the open image's header).
func depthOf(c *conn, img *rbd.Image) (int, error) {
	cur := img
	closeCur := func() {
		if cur != img {
			_ = cur.Close()
		}
	}
	for depth := 0; depth <= maxWalk; depth++ {
		next, err := openParent(c, cur)
		closeCur()
		if errors.Is(err, errParentGone) {
			// librbd keeps a parent while a child reads through it, so a
			// parent that vanished under an open child means the child was
			// flattened meanwhile (a flatten task running): the chain ends.
			return depth, nil
		}
		if err != nil {
			return 0, err
		}
		if next == nil {
			return depth, nil
		}
		cur = next
	}
	closeCur()
	return 0, fmt.Errorf("clone chain longer than %d: %w", maxWalk, ceph.ErrInvalid)
}

// openParent opens img's parent at the parent snapshot, or returns nil when
// img has no parent.
func openParent(c *conn, img *rbd.Image) (*rbd.Image, error) {
	p, err := img.GetParent()
	if errors.Is(err, rbd.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent of %s: %w", img.GetName(), err)
	}
	pio, err := c.ioctx(p.Image.PoolName, p.Image.PoolNamespace)
	if err != nil {
		return nil, err
	}
	parent, err := rbd.OpenImageByIdReadOnly(pio, p.Image.ImageID, rbd.NoSnapshot)
	if errors.Is(err, rbd.ErrNotFound) {
		return nil, errParentGone
	}
	if err != nil {
		return nil, fmt.Errorf("open parent %s/%s: %w", p.Image.PoolName, p.Image.ImageID, err)
	}
	if err := parent.SetSnapByID(p.Snap.ID); err != nil {
		_ = parent.Close()
		if errors.Is(err, rbd.ErrNotFound) {
			return nil, errParentGone
		}
		return nil, fmt.Errorf("parent snapshot %d of %s: %w", p.Snap.ID, p.Image.ImageID, err)
	}
	return parent, nil
}

// errParentGone: the parent an open image names no longer exists.
var errParentGone = errors.New("parent gone")

// parentOf reads the image's parent for StatImage; nil when it has none.
func parentOf(img *rbd.Image) (*ceph.Parent, error) {
	p, err := img.GetParent()
	if errors.Is(err, rbd.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent: %w", err)
	}
	return &ceph.Parent{
		Pool: p.Image.PoolName, Image: p.Image.ImageName, ImageID: p.Image.ImageID,
		Snap: p.Snap.SnapName, InTrash: p.Image.Trash,
	}, nil
}
