// Package cephfake is an in-memory ceph.Backend for unit tests. It follows
// the real backend's contract (errors, exclusive create, trash) and lets a
// test inject failures per operation.
package cephfake

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Backend is the fake. The zero value is not usable; call New.
type Backend struct {
	mu       sync.Mutex
	pools    map[string]int64
	images   map[string]*ceph.ImageInfo // key: pool/ns/name
	trash    map[string]map[string]ceph.TrashEntry
	watchers map[string][]ceph.Watcher
	keys     map[string]string // user -> key
	nextID   int
	// Fail, when set, is consulted before each operation; a non-nil error
	// is returned instead of performing it.
	Fail func(op string, ref ceph.ImageRef) error
	// Calls counts operations by name.
	Calls map[string]int
	// Mgr says whether a ceph-mgr takes async trash purges.
	Mgr bool
	// FSID is the cluster fsid StatImage reports (New sets FakeFSID).
	FSID string
	// NonRBDPools are pools RBDPools leaves out (no rbd application).
	NonRBDPools map[string]bool
	// Usage is what PoolUsage reports for every pool not in PoolUsages.
	Usage ceph.PoolUsage
	// PoolUsages, by pool name, overrides Usage.
	PoolUsages map[string]ceph.PoolUsage
	// Blank names the images (by name) Unwritten reports as never written;
	// it reports every other image as written, the answer that never puts
	// data at risk.
	Blank map[string]bool
	// PartialGrace: RemovePartialImage answers ErrInProgress for an image
	// created less than this long ago, as the real backend does for pieces
	// that may be a create still running. Zero removes at once.
	PartialGrace time.Duration

	// Snapshot bookkeeping (snapshot.go), by image ID.
	snaps      map[string]map[string]*fakeSnap
	links      map[string]fakeLink
	flattening map[string]bool
	born       map[string]time.Time // by image ID

	// Attachment records (attach.go), by image key, and blocklisted
	// client addresses with their expiry.
	records   map[string][]byte
	blocklist map[string]time.Duration
}

var _ ceph.Backend = (*Backend)(nil)

// FakeFSID is the fsid of every fake cluster unless a test sets FSID.
const FakeFSID = "00000000-0000-4000-8000-0000000000f5"

// New returns a fake cluster with the given pools and one user.
func New(user, key string, pools ...string) *Backend {
	b := &Backend{
		pools: map[string]int64{}, images: map[string]*ceph.ImageInfo{}, trash: map[string]map[string]ceph.TrashEntry{},
		watchers: map[string][]ceph.Watcher{}, keys: map[string]string{user: key}, Calls: map[string]int{}, Mgr: true,
		Usage: ceph.PoolUsage{MaxAvail: 100 << 30}, FSID: FakeFSID,
	}
	for i, p := range pools {
		b.pools[p] = int64(i + 1)
	}
	return b
}

// newID numbers a new image and notes when it was made.
func (b *Backend) newID() string {
	b.nextID++
	id := strconv.Itoa(b.nextID)
	if b.born == nil {
		b.born = map[string]time.Time{}
	}
	b.born[id] = time.Now()
	return id
}

// AddUser lets another cephx user in.
func (b *Backend) AddUser(user, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys[user] = key
}

// SetWatchers makes the image look open by other clients.
func (b *Backend) SetWatchers(ref ceph.ImageRef, ws []ceph.Watcher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watchers[key(ref)] = ws
}

// Images lists the images of a pool, sorted.
func (b *Backend) Images(pool string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, img := range b.images {
		if p, _ := b.poolOf(img); p == pool {
			out = append(out, img.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Trash lists a pool's trash entries by name.
func (b *Backend) Trash(pool string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.trash[pool] {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func (b *Backend) poolOf(img *ceph.ImageInfo) (string, bool) {
	for k, v := range b.images {
		if v == img {
			for p := range b.pools {
				if len(k) > len(p) && k[:len(p)+1] == p+"/" {
					return p, true
				}
			}
		}
	}
	return "", false
}

func key(ref ceph.ImageRef) string {
	return ref.Pool + "/" + ref.Cluster.RadosNamespace + "/" + ref.Name
}

// enter checks context, credentials, the pool and injected failures.
func (b *Backend) enter(ctx context.Context, op string, cr ceph.Credentials, ref ceph.ImageRef) error {
	if err := ctx.Err(); err != nil {
		return &ceph.OpError{Op: op, Target: ref.String(), Err: fmt.Errorf("%w: %v", ceph.ErrTimeout, err)}
	}
	b.Calls[op]++
	if b.Fail != nil {
		if err := b.Fail(op, ref); err != nil {
			return &ceph.OpError{Op: op, Target: ref.String(), Err: err}
		}
	}
	if k, ok := b.keys[cr.User]; !ok || k != cr.Key {
		return &ceph.OpError{Op: "connect to", Target: "cluster", Err: fmt.Errorf("%w for client.%s", ceph.ErrAuth, cr.User)}
	}
	if ref.Pool != "" {
		if _, ok := b.pools[ref.Pool]; !ok {
			return &ceph.OpError{Op: op, Target: ref.String(), Err: fmt.Errorf("pool %s: %w", ref.Pool, ceph.ErrNotFound)}
		}
	}
	return nil
}

func notFound(op string, ref ceph.ImageRef) error {
	return &ceph.OpError{Op: op, Target: ref.String(), Err: ceph.ErrNotFound}
}

// CreateImage implements ceph.Backend.
func (b *Backend) CreateImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, spec ceph.ImageSpec) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "create", cr, ref); err != nil {
		return err
	}
	if _, ok := b.images[key(ref)]; ok {
		return &ceph.OpError{Op: "create", Target: ref.String(), Err: ceph.ErrExists}
	}
	if spec.DataPool != "" {
		if _, ok := b.pools[spec.DataPool]; !ok {
			return &ceph.OpError{Op: "create", Target: ref.String(), Err: fmt.Errorf("data pool %s: %w", spec.DataPool, ceph.ErrNotFound)}
		}
		spec.Features |= ceph.FeatureDataPool
	}
	b.images[key(ref)] = &ceph.ImageInfo{
		Name: ref.Name, ID: b.newID(), Size: spec.Size, Features: spec.Features,
		DataPool: spec.DataPool, Metadata: maps.Clone(spec.Metadata),
	}
	if b.images[key(ref)].Metadata == nil {
		b.images[key(ref)].Metadata = map[string]string{}
	}
	return nil
}

// StatImage implements ceph.Backend.
func (b *Backend) StatImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (ceph.ImageInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "stat", cr, ref); err != nil {
		return ceph.ImageInfo{}, err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return ceph.ImageInfo{}, notFound("stat", ref)
	}
	out := *img
	out.ClusterFSID = b.FSID
	out.Metadata = maps.Clone(img.Metadata)
	if img.Parent != nil {
		p := *img.Parent
		out.Parent = &p
	}
	return out, nil
}

// ReadHeader implements ceph.Backend.
func (b *Backend) ReadHeader(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (ceph.ImageHeader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "read-header", cr, ref); err != nil {
		return ceph.ImageHeader{}, err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return ceph.ImageHeader{}, notFound("read-header", ref)
	}
	return ceph.ImageHeader{ID: img.ID, Size: img.Size, Order: 22, Features: img.Features, HasParent: img.Parent != nil, Metadata: maps.Clone(img.Metadata), ClusterFSID: b.FSID}, nil
}

// Unwritten implements ceph.Backend.
func (b *Backend) Unwritten(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, h ceph.ImageHeader, _ []ceph.ByteRange) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "unwritten", cr, ref); err != nil {
		return false, err
	}
	if _, ok := b.images[key(ref)]; !ok {
		return false, notFound("unwritten", ref)
	}
	return b.Blank[ref.Name] && !h.HasParent, nil
}

// SetMetadata implements ceph.Backend.
func (b *Backend) SetMetadata(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, md map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "set-metadata", cr, ref); err != nil {
		return err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return notFound("set-metadata", ref)
	}
	maps.Copy(img.Metadata, md)
	return nil
}

// RemoveMetadata implements ceph.Backend.
func (b *Backend) RemoveMetadata(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, k string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "remove-metadata", cr, ref); err != nil {
		return err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return notFound("remove-metadata", ref)
	}
	delete(img.Metadata, k)
	return nil
}

// ResizeImage implements ceph.Backend.
func (b *Backend) ResizeImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, size uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "resize", cr, ref); err != nil {
		return err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return notFound("resize", ref)
	}
	img.Size = size
	return nil
}

// RemovePartialImage implements ceph.Backend.
func (b *Backend) RemovePartialImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "remove", cr, ref); err != nil {
		return err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return notFound("remove", ref)
	}
	if age := time.Since(b.born[img.ID]); age < b.PartialGrace {
		return &ceph.OpError{Op: "remove", Target: ref.String(), Err: fmt.Errorf("%w: created %v ago", ceph.ErrInProgress, age)}
	}
	if b.purgeBlocked(img.ID) {
		return &ceph.OpError{Op: "remove", Target: ref.String(), Err: fmt.Errorf("%w: image has snapshots", ceph.ErrBusy)}
	}
	delete(b.images, key(ref))
	b.dropImage(img.ID)
	return nil
}

// TrashImage implements ceph.Backend.
func (b *Backend) TrashImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "trash", cr, ref); err != nil {
		return nil, err
	}
	img, ok := b.images[key(ref)]
	if !ok {
		return b.trashedIDs(ref)
	}
	if len(b.watchers[key(ref)]) > 0 {
		return nil, &ceph.OpError{Op: "trash", Target: ref.String(), Err: ceph.ErrBusy}
	}
	delete(b.images, key(ref))
	if b.trash[ref.Pool] == nil {
		b.trash[ref.Pool] = map[string]ceph.TrashEntry{}
	}
	b.trash[ref.Pool][img.ID] = ceph.TrashEntry{ID: img.ID, Name: img.Name, DeletionTime: time.Now()}
	return []string{img.ID}, nil
}

// trashedIDs is TrashImage for an image already in the trash.
func (b *Backend) trashedIDs(ref ceph.ImageRef) ([]string, error) {
	ids := make([]string, 0, len(b.trash[ref.Pool]))
	for id, e := range b.trash[ref.Pool] {
		if e.Name == ref.Name {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, notFound("trash", ref)
	}
	sort.Strings(ids)
	return ids, nil
}

// ListTrash implements ceph.Backend.
func (b *Backend) ListTrash(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]ceph.TrashEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "list-trash", cr, ceph.ImageRef{Cluster: cl, Pool: pool}); err != nil {
		return nil, err
	}
	var out []ceph.TrashEntry
	for _, e := range b.trash[pool] {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PurgeTrash implements ceph.Backend. The fake mgr purges at once.
func (b *Backend) PurgeTrash(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool, id string, async bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ref := ceph.ImageRef{Cluster: cl, Pool: pool, Name: id}
	if err := b.enter(ctx, "purge", cr, ref); err != nil {
		return err
	}
	if async && !b.Mgr {
		return &ceph.OpError{Op: "purge", Target: ref.String(), Err: ceph.ErrNoManager}
	}
	if _, ok := b.trash[pool][id]; !ok {
		return notFound("purge", ref)
	}
	if b.purgeBlocked(id) {
		return &ceph.OpError{Op: "purge", Target: ref.String(), Err: fmt.Errorf("%w: image has snapshots", ceph.ErrBusy)}
	}
	delete(b.trash[pool], id)
	b.dropImage(id)
	return nil
}

// ListImages implements ceph.Backend.
func (b *Backend) ListImages(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]string, error) {
	b.mu.Lock()
	if err := b.enter(ctx, "list", cr, ceph.ImageRef{Cluster: cl, Pool: pool}); err != nil {
		b.mu.Unlock()
		return nil, err
	}
	b.mu.Unlock()
	return b.Images(pool), nil
}

// PoolUsage implements ceph.Backend.
func (b *Backend) PoolUsage(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) (ceph.PoolUsage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "usage", cr, ceph.ImageRef{Cluster: cl, Pool: pool}); err != nil {
		return ceph.PoolUsage{}, err
	}
	if u, ok := b.PoolUsages[pool]; ok {
		return u, nil
	}
	return b.Usage, nil
}

// Watchers implements ceph.Backend.
func (b *Backend) Watchers(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]ceph.Watcher, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "watchers", cr, ref); err != nil {
		return nil, err
	}
	if _, ok := b.images[key(ref)]; !ok {
		return nil, notFound("watchers", ref)
	}
	return b.watchers[key(ref)], nil
}

// PoolID implements ceph.Backend.
func (b *Backend) PoolID(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "pool-id", cr, ceph.ImageRef{Cluster: cl}); err != nil {
		return 0, err
	}
	id, ok := b.pools[pool]
	if !ok {
		return 0, &ceph.OpError{Op: "look up pool", Target: pool, Err: ceph.ErrNotFound}
	}
	return id, nil
}

// PoolName implements ceph.Backend.
func (b *Backend) PoolName(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, id int64) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "pool-name", cr, ceph.ImageRef{Cluster: cl}); err != nil {
		return "", err
	}
	for name, pid := range b.pools {
		if pid == id {
			return name, nil
		}
	}
	return "", &ceph.OpError{Op: "look up pool", Target: strconv.FormatInt(id, 10), Err: ceph.ErrNotFound}
}

// ListImageIDs implements ceph.Backend.
func (b *Backend) ListImageIDs(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]ceph.ImageEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "list-ids", cr, ceph.ImageRef{Cluster: cl, Pool: pool}); err != nil {
		return nil, err
	}
	var out []ceph.ImageEntry
	for _, img := range b.images {
		if p, _ := b.poolOf(img); p == pool {
			out = append(out, ceph.ImageEntry{Name: img.Name, ID: img.ID})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MetadataByID implements ceph.Backend.
func (b *Backend) MetadataByID(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool, key string, ids []string) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "metadata-by-id", cr, ceph.ImageRef{Cluster: cl, Pool: pool}); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]string{}
	for _, img := range b.images {
		if p, _ := b.poolOf(img); p != pool || !want[img.ID] {
			continue
		}
		if v, ok := img.Metadata[key]; ok {
			out[img.ID] = v
		}
	}
	return out, nil
}

// RBDPools implements ceph.Backend: every pool but NonRBDPools.
func (b *Backend) RBDPools(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "rbd-pools", cr, ceph.ImageRef{Cluster: cl}); err != nil {
		return nil, err
	}
	var out []string
	for p := range b.pools {
		if !b.NonRBDPools[p] {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}
