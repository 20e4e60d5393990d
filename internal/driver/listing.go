package driver

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

// GetCapacity implements csi.ControllerServer. With StorageClass parameters
// it reports the named pool; without, the sum over the pools this controller
// knows (the CSI spec leaves that case to the plugin).
func (d *controllerService) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for _, c := range req.GetVolumeCapabilities() {
		if _, err := checkCapability(c); err != nil {
			return &csi.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	if len(req.GetParameters()) == 0 {
		return d.totalCapacity(ctx)
	}
	p, err := params.ParseVolume(req.GetParameters())
	if err != nil {
		return nil, statusOf(err, "")
	}
	cl, err := d.clusterFor(p)
	if err != nil {
		return nil, err
	}
	creds, err := d.credsFor(cl, p.Pool)
	if err != nil {
		return nil, err
	}
	u, err := d.opts.Backend.PoolUsage(ctx, creds, cl, p.Pool)
	if err != nil {
		return nil, statusOf(err, "read capacity of pool "+p.Pool)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: int64(u.Available())}, nil
}

// totalCapacity answers GetCapacity without parameters: for each Ceph
// cluster the most any one of its pools offers, summed over the clusters.
// Pools (and RADOS namespaces) of one cluster share its OSDs, so their
// available figures are the same space seen several times: a sum would
// promise it once per pool.
func (d *controllerService) totalCapacity(ctx context.Context) (*csi.GetCapacityResponse, error) {
	pools, err := d.listingPools(ctx)
	if err != nil {
		return nil, err
	}
	best := map[string]uint64{} // physical cluster: largest pool figure
	for _, a := range pools {
		u, err := d.opts.Backend.PoolUsage(ctx, a.creds, a.cluster, a.pool)
		if skippable(a, err) {
			continue
		}
		if err != nil {
			return nil, statusOf(err, "read capacity of pool "+a.pool)
		}
		cl := a.cluster
		cl.RadosNamespace = ""
		best[cl.Key()] = max(best[cl.Key()], u.Available())
	}
	var total uint64
	for _, avail := range best {
		total += avail
	}
	return &csi.GetCapacityResponse{AvailableCapacity: int64(total)}, nil
}

// ListVolumes implements csi.ControllerServer over the pools this controller
// knows, listing only images this installation generated (by the instance
// tag in their names). The token is
// the position in the listing, so volumes created or deleted between pages
// may shift entries but never produce an error.
func (d *controllerService) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("max_entries must not be negative")
	}
	start, err := parseToken(req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	ids, ok := d.walk.get(start)
	if !ok {
		if ids, err = d.allVolumeIDs(ctx); err != nil {
			return nil, err
		}
		d.walk.put(ids)
	}
	page, next, err := paginate(ids, start, req.GetMaxEntries(), "volumes")
	if err != nil {
		return nil, err
	}
	if next == "" {
		d.walk.drop()
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, id := range page {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: &csi.Volume{VolumeId: id}})
	}
	return resp, nil
}

func (d *controllerService) allVolumeIDs(ctx context.Context) ([]string, error) {
	pools, err := d.listingPools(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, a := range pools {
		poolIDs, err := d.poolVolumeIDs(ctx, a)
		if skippable(a, err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, poolIDs...)
	}
	return ids, nil
}

// skippable says whether err only shows that the --secrets-dir
// credentials may not read a pool they found: the cluster's other
// installations' pools are not this driver's business.
func skippable(a poolAccess, err error) bool {
	return a.discovered && errors.Is(err, ceph.ErrPermission)
}

// poolVolumeIDs lists the IDs of this installation's volumes in one pool.
// The user a version 2 ID records is only in each image's owner record:
// reading those costs one round trip per image the first time and none
// after (recordedUsers), where opening every image cost several.
func (d *controllerService) poolVolumeIDs(ctx context.Context, a poolAccess) ([]string, error) {
	entries, err := d.opts.Backend.ListImageIDs(ctx, a.creds, a.cluster, a.pool)
	if skippable(a, err) {
		return nil, err
	}
	if err != nil {
		return nil, statusOf(err, "list images of pool "+a.pool)
	}
	poolID, err := d.opts.Backend.PoolID(ctx, a.creds, a.cluster, a.pool)
	if err != nil {
		return nil, statusOf(err, "look up pool "+a.pool)
	}
	owned := entries[:0:0]
	for _, e := range entries {
		if params.OwnedBy(e.Name, d.opts.InstanceID) && !params.IsSnapshotImage(e.Name) {
			owned = append(owned, e)
		}
	}
	users, err := d.recordedUsers.lookup(ctx, d.opts.Backend, a, owned)
	if err != nil {
		return nil, statusOf(err, "read owner records in pool "+a.pool)
	}
	ids := make([]string, 0, len(owned))
	for _, e := range owned {
		ref := ceph.ImageRef{Cluster: a.cluster, Pool: a.pool, Name: e.Name}
		if id, err := encodeID(ref, poolID, users[e.ID]); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// userCache remembers, per pool and image ID, the cephx user an image's
// owner record names ("" for none). A record, once written, never changes
// and a new image under an old name gets a new ID, so entries never go
// stale; each walk keeps only the IDs still listed, so the cache holds no
// more than the pools' volumes.
type userCache struct {
	mu    sync.Mutex
	pools map[string]map[string]string // pool key → image ID → user
}

func newUserCache() *userCache { return &userCache{pools: map[string]map[string]string{}} }

// lookup returns the recorded user by image ID for entries, reading the
// owner records it does not know yet. An image without a record (gone,
// or a create that has not written it yet) records none and is read
// again next time.
func (c *userCache) lookup(ctx context.Context, b ceph.Backend, a poolAccess, entries []ceph.ImageEntry) (map[string]string, error) {
	key := a.key()
	c.mu.Lock()
	known := c.pools[key]
	c.mu.Unlock()
	users := make(map[string]string, len(entries))
	var missing []string
	for _, e := range entries {
		if u, ok := known[e.ID]; ok {
			users[e.ID] = u
		} else {
			missing = append(missing, e.ID)
		}
	}
	if len(missing) > 0 {
		records, err := b.MetadataByID(ctx, a.creds, a.cluster, a.pool, metaOwner, missing)
		if err != nil {
			return nil, err
		}
		for id, raw := range records {
			var o owner
			if json.Unmarshal([]byte(raw), &o) == nil {
				users[id] = o.User
			}
		}
	}
	c.mu.Lock()
	c.pools[key] = users
	c.mu.Unlock()
	return users, nil
}

// walkTTL is how long the listing a walk's first page made serves the
// walk's later pages, so that a walk of 10,000 volumes in pages of 500
// lists the pools once instead of 21 times. Volumes created or deleted
// meanwhile show in the next walk, which the token's contract (a position
// in the listing) allows.
const walkTTL = 30 * time.Second

// walkCache holds the volume IDs of the walk in progress.
type walkCache struct {
	mu  sync.Mutex
	ids []string
	at  time.Time
}

// get returns the cached listing for a page after the first.
func (w *walkCache) get(start int) ([]string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if start == 0 || w.ids == nil || time.Since(w.at) > walkTTL {
		return nil, false
	}
	return w.ids, true
}

func (w *walkCache) put(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ids, w.at = ids, time.Now()
}

// drop forgets the listing once its last page is served.
func (w *walkCache) drop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ids = nil
}
