package cephfake

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// fakeSnap is one snapshot of a fake image, kept by image ID so that it
// survives the image's move to the trash, as in RBD.
type fakeSnap struct {
	info     ceph.SnapInfo
	children int  // clones reading through it
	trashed  bool // removed while clones exist: in the trash namespace
}

// fakeLink is a clone's parent, by image ID and snapshot name.
type fakeLink struct {
	parentID string
	snap     string
}

// snapState lazily creates the fake's snapshot bookkeeping.
func (b *Backend) snapState() {
	if b.snaps == nil {
		b.snaps = map[string]map[string]*fakeSnap{}
		b.links = map[string]fakeLink{}
		b.flattening = map[string]bool{}
	}
}

func (b *Backend) image(op string, ref ceph.ImageRef) (*ceph.ImageInfo, error) {
	img, ok := b.images[key(ref)]
	if !ok {
		return nil, notFound(op, ref)
	}
	return img, nil
}

// CreateSnap implements ceph.Backend.
func (b *Backend) CreateSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string, depth ceph.DepthWalk) (ceph.SnapInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "snap-create", cr, ref); err != nil {
		return ceph.SnapInfo{}, err
	}
	img, err := b.image("snap-create", ref)
	if err != nil {
		return ceph.SnapInfo{}, err
	}
	b.snapState()
	if b.snaps[img.ID] == nil {
		b.snaps[img.ID] = map[string]*fakeSnap{}
	}
	s, ok := b.snaps[img.ID][snap]
	if !ok || s.trashed {
		b.nextID++
		s = &fakeSnap{info: ceph.SnapInfo{ID: uint64(b.nextID), Name: snap, Size: img.Size, Created: time.Now()}}
		b.snaps[img.ID][snap] = s
	}
	if depth == ceph.SkipDepth {
		info := s.info
		info.Depth = -1
		return info, nil
	}
	// Counted apart from CloneDepth: tests check which calls walk.
	b.Calls["snap-create-depth"]++
	return b.withDepth(img, s.info), nil
}

// StatSnap implements ceph.Backend.
func (b *Backend) StatSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string) (ceph.SnapInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "snap-stat", cr, ref); err != nil {
		return ceph.SnapInfo{}, err
	}
	img, err := b.image("snap-stat", ref)
	if err != nil {
		return ceph.SnapInfo{}, err
	}
	b.snapState()
	s, ok := b.snaps[img.ID][snap]
	if !ok || s.trashed {
		return ceph.SnapInfo{}, notFound("snap-stat", ref)
	}
	info := b.withDepth(img, s.info)
	info.ImageMetadata = maps.Clone(img.Metadata)
	return info, nil
}

// ListSnaps implements ceph.Backend.
func (b *Backend) ListSnaps(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "snap-list", cr, ref); err != nil {
		return nil, err
	}
	img, err := b.image("snap-list", ref)
	if err != nil {
		return nil, err
	}
	b.snapState()
	var names []string
	for name, s := range b.snaps[img.ID] {
		if !s.trashed {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// RemoveSnap implements ceph.Backend.
func (b *Backend) RemoveSnap(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, snap string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "snap-remove", cr, ref); err != nil {
		return err
	}
	img, err := b.image("snap-remove", ref)
	if err != nil {
		return err
	}
	b.snapState()
	s, ok := b.snaps[img.ID][snap]
	if !ok || s.trashed {
		return notFound("snap-remove", ref)
	}
	if s.children > 0 {
		// Clone v2: the snapshot moves to the trash namespace under a new
		// name, freeing the user-visible one.
		s.trashed = true
		trashName := "trash-" + strconv.FormatUint(s.info.ID, 10)
		delete(b.snaps[img.ID], snap)
		b.snaps[img.ID][trashName] = s
		for child, l := range b.links {
			if l.parentID == img.ID && l.snap == snap {
				b.links[child] = fakeLink{parentID: img.ID, snap: trashName}
			}
		}
		return nil
	}
	delete(b.snaps[img.ID], snap)
	return nil
}

// CloneImage implements ceph.Backend.
func (b *Backend) CloneImage(ctx context.Context, cr ceph.Credentials, parent ceph.ImageRef, snap string, child ceph.ImageRef, spec ceph.CloneSpec) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "clone", cr, child); err != nil {
		return err
	}
	p, err := b.image("clone", parent)
	if err != nil {
		return err
	}
	b.snapState()
	s, ok := b.snaps[p.ID][snap]
	if !ok || s.trashed {
		return notFound("clone", parent)
	}
	if _, ok := b.images[key(child)]; ok {
		return &ceph.OpError{Op: "clone", Target: child.String(), Err: ceph.ErrExists}
	}
	img := &ceph.ImageInfo{
		Name: child.Name, ID: b.newID(), Size: s.info.Size, Features: spec.Features | ceph.FeatureLayering,
		DataPool: spec.DataPool, Metadata: maps.Clone(p.Metadata),
		Parent: &ceph.Parent{Pool: parent.Pool, Image: parent.Name, ImageID: p.ID, Snap: snap},
	}
	// librbd copies the parent's image-meta into the clone.
	if img.Metadata == nil {
		img.Metadata = map[string]string{}
	}
	maps.Copy(img.Metadata, spec.Metadata)
	b.images[key(child)] = img
	b.links[img.ID] = fakeLink{parentID: p.ID, snap: snap}
	s.children++
	return nil
}

// FlattenImage implements ceph.Backend. With async and a mgr, the flatten
// stays pending until the test calls FinishFlattens, so tests can see the
// in-progress state.
func (b *Backend) FlattenImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, async bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "flatten", cr, ref); err != nil {
		return err
	}
	if async && !b.Mgr {
		return &ceph.OpError{Op: "flatten", Target: ref.String(), Err: ceph.ErrNoManager}
	}
	img, err := b.image("flatten", ref)
	if err != nil {
		return err
	}
	b.snapState()
	if async {
		b.flattening[img.ID] = true
		return nil
	}
	b.detach(img)
	return nil
}

// FinishFlattens completes every queued asynchronous flatten.
func (b *Backend) FinishFlattens() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snapState()
	for _, img := range b.images {
		if b.flattening[img.ID] {
			b.detach(img)
		}
	}
}

// detach makes img independent of its parent, as a flatten does.
func (b *Backend) detach(img *ceph.ImageInfo) {
	delete(b.flattening, img.ID)
	link, ok := b.links[img.ID]
	if !ok {
		return
	}
	delete(b.links, img.ID)
	img.Parent = nil
	b.release(link)
}

// release drops one child of a parent snapshot, removing the snapshot when
// it was waiting in the trash namespace for its last clone.
func (b *Backend) release(link fakeLink) {
	s, ok := b.snaps[link.parentID][link.snap]
	if !ok {
		return
	}
	s.children--
	if s.trashed && s.children == 0 {
		delete(b.snaps[link.parentID], link.snap)
	}
}

// CloneDepth implements ceph.Backend.
func (b *Backend) CloneDepth(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "depth", cr, ref); err != nil {
		return 0, err
	}
	img, err := b.image("depth", ref)
	if err != nil {
		return 0, err
	}
	b.snapState()
	return b.depth(img.ID)
}

func (b *Backend) depth(id string) (int, error) {
	depth := 0
	for ; ; depth++ {
		link, ok := b.links[id]
		if !ok {
			return depth, nil
		}
		if depth > 64 {
			return 0, fmt.Errorf("parent loop at %s", id)
		}
		id = link.parentID
	}
}

func (b *Backend) withDepth(img *ceph.ImageInfo, info ceph.SnapInfo) ceph.SnapInfo {
	info.Depth, _ = b.depth(img.ID)
	return info
}

// purgeBlocked reports why a trashed image cannot be removed yet: it still
// has snapshots (user ones, or trashed ones that clones read through).
func (b *Backend) purgeBlocked(id string) bool {
	return len(b.snaps[id]) > 0
}

// dropImage forgets a removed image's snapshot bookkeeping and detaches it
// from its parent.
func (b *Backend) dropImage(id string) {
	b.snapState()
	delete(b.snaps, id)
	delete(b.flattening, id)
	if link, ok := b.links[id]; ok {
		delete(b.links, id)
		b.release(link)
	}
}

// Snapshots lists the user-visible snapshot names of an image (for tests).
func (b *Backend) Snapshots(ref ceph.ImageRef) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	img, ok := b.images[key(ref)]
	if !ok {
		return nil
	}
	var out []string
	for n, s := range b.snaps[img.ID] {
		if !s.trashed {
			out = append(out, n)
		}
	}
	return out
}
