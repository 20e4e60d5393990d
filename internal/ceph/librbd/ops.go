package librbd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/ceph/go-ceph/rbd/admin"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
)

// CreateImage implements ceph.Backend.
func (b *Backend) CreateImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, spec ceph.ImageSpec) error {
	return b.onPool(ctx, "create image", ref, cr, func(c *conn, io *rados.IOContext) error {
		order, direct, err := c.directCreate(io, ref, spec)
		if err != nil {
			return err
		}
		if direct {
			return createDirect(io, ref.Name, order, spec)
		}
		err = c.withPoolCheck(dataPoolOf(ref.Pool, spec.DataPool), func() error { return createImage(io, ref.Name, spec) })
		if err != nil {
			return err
		}
		failpoint.Crash("create-before-metadata")
		return writeNewImageMetadata(io, ref.Name, spec.Metadata)
	})
}

// writeNewImageMetadata stores image-meta on an image just created, with
// two RADOS operations instead of the open / set / notify / close cycle of
// librbd (about four times the round trips, a watch registration included),
// which would more than double the cost of CreateVolume. It writes what
// cls_rbd's metadata_set writes: omap keys "metadata_<key>" on the image
// header, whose object name comes from the rbd_id.<name> object. Nobody
// watches an image this young, so librbd's change notification is not
// needed; `rbd image-meta list` and librbd read the keys as usual.
func writeNewImageMetadata(io *rados.IOContext, name string, md map[string]string) error {
	if len(md) == 0 {
		return nil
	}
	id, err := readImageID(io, name)
	if err != nil {
		return err
	}
	if err := io.SetOmap(headerObject(id), metadataKeys(md)); err != nil {
		return fmt.Errorf("write image-meta of %s: %w", name, err)
	}
	return nil
}

// ReadHeader implements ceph.Backend. An open costs several round trips
// (header, snapshot context, configuration overrides, and the same again
// for a clone's parent); a stage, a publish and a restore need only what
// the header says.
func (b *Backend) ReadHeader(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (ceph.ImageHeader, error) {
	var h ceph.ImageHeader
	err := b.onPool(ctx, "read the header of", ref, cr, func(c *conn, io *rados.IOContext) error {
		id, err := readImageID(io, ref.Name)
		if err != nil {
			return err
		}
		if h, err = readHeader(io, id); err != nil {
			return err
		}
		h.ClusterFSID, err = c.fsid()
		return err
	})
	return h, err
}

// metadataPage is how many image-meta keys one omap read returns.
const metadataPage = 256

// noSnap is CEPH_NOSNAP: cls_rbd methods given it answer for the image's
// head rather than one of its snapshots.
const noSnap = ^uint64(0) - 1

// readHeader asks the image header for its size and features with the
// cls_rbd methods librbd's open uses, looks for its parent key, and reads
// the first page of its image-meta ("metadata_" omap keys, as
// metadata_list returns them), all in one operation. A missing header is
// ENOENT.
func readHeader(io *rados.IOContext, id string) (ceph.ImageHeader, error) {
	const prefix = metadataPrefix
	h := ceph.ImageHeader{ID: id}
	snap := binary.LittleEndian.AppendUint64(nil, noSnap)
	op := rados.CreateReadOp()
	defer op.Release()
	sizeStep := op.Exec("rbd", "get_size", snap)
	featStep := op.Exec("rbd", "get_features", snap)
	parentStep := op.GetOmapValuesByKeys([]string{parentKey})
	metaStep := op.GetOmapValues("", prefix, metadataPage)
	if err := op.Operate(io, headerObject(id), rados.OperationNoFlag); err != nil {
		return h, fmt.Errorf("header of image ID %s: %w", id, err)
	}
	// get_size answers order (u8) then size (u64); get_features the
	// features (u64) then the incompatible ones (u64).
	out, err := sizeStep.Bytes()
	if err != nil || len(out) < 9 {
		return h, fmt.Errorf("size of image ID %s: %d bytes, %v", id, len(out), err)
	}
	h.Order, h.Size = out[0], binary.LittleEndian.Uint64(out[1:9])
	if out, err = featStep.Bytes(); err != nil || len(out) < 8 {
		return h, fmt.Errorf("features of image ID %s: %d bytes, %v", id, len(out), err)
	}
	h.Features = ceph.Features(binary.LittleEndian.Uint64(out[:8]))
	parent, err := parentStep.Next()
	if err != nil {
		return h, fmt.Errorf("parent of image ID %s: %w", id, err)
	}
	h.HasParent = parent != nil
	h.Metadata = map[string]string{}
	last := ""
	for {
		kv, err := metaStep.Next()
		if err != nil {
			return h, fmt.Errorf("image-meta of image ID %s: %w", id, err)
		}
		if kv == nil {
			break
		}
		h.Metadata[strings.TrimPrefix(kv.Key, prefix)] = string(kv.Value)
		last = kv.Key
	}
	if !metaStep.More() {
		return h, nil
	}
	rest, err := io.GetAllOmapValues(headerObject(id), last, prefix, metadataPage)
	if err != nil {
		return h, fmt.Errorf("image-meta of image ID %s: %w", id, err)
	}
	for k, v := range rest {
		h.Metadata[strings.TrimPrefix(k, prefix)] = string(v)
	}
	return h, nil
}

// readImageID decodes the rbd_id.<name> object, which holds the image ID
// as an encoded string.
func readImageID(io *rados.IOContext, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := io.Read(idObject(name), buf, 0)
	if err != nil {
		return "", fmt.Errorf("read id of %s: %w", name, err)
	}
	id, _, err := decodeString(buf[:n])
	if err != nil || id == "" {
		return "", fmt.Errorf("id object of %s is malformed (%d bytes): %v", name, n, err)
	}
	return id, nil
}

// dataPoolOf is the pool an image's data goes to: its data pool, if any.
func dataPoolOf(pool, dataPool string) string {
	if dataPool != "" {
		return dataPool
	}
	return pool
}

func createImage(io *rados.IOContext, name string, spec ceph.ImageSpec) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(rbd.ImageOptionFormat, 2); err != nil {
		return err
	}
	if err := opts.SetUint64(rbd.ImageOptionFeatures, uint64(spec.Features)); err != nil {
		return err
	}
	if spec.DataPool != "" {
		if err := opts.SetString(rbd.ImageOptionDataPool, spec.DataPool); err != nil {
			return err
		}
	}
	return rbd.CreateImage(io, name, spec.Size, opts)
}

// StatImage implements ceph.Backend.
func (b *Backend) StatImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) (ceph.ImageInfo, error) {
	var info ceph.ImageInfo
	err := b.onPool(ctx, "inspect image", ref, cr, func(c *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, true, func(img *rbd.Image) error {
			var err error
			info, err = statImage(c, io, img)
			return err
		})
	})
	return info, err
}

func statImage(c *conn, io *rados.IOContext, img *rbd.Image) (ceph.ImageInfo, error) {
	info := ceph.ImageInfo{Name: img.GetName()}
	var err error
	if info.Size, err = img.GetSize(); err != nil {
		return info, fmt.Errorf("size: %w", err)
	}
	features, err := img.GetFeatures()
	if err != nil {
		return info, fmt.Errorf("features: %w", err)
	}
	info.Features = ceph.Features(features)
	if info.ID, err = img.GetId(); err != nil {
		return info, fmt.Errorf("id: %w", err)
	}
	if info.Features&ceph.FeatureDataPool != 0 {
		id, err := img.GetDataPoolID()
		if err != nil {
			return info, fmt.Errorf("data pool: %w", err)
		}
		if info.DataPool, err = c.rc.GetPoolByID(id); err != nil {
			return info, fmt.Errorf("data pool %d: %w", id, err)
		}
	}
	if info.Metadata, err = img.ListMetadata(); err != nil {
		return info, fmt.Errorf("metadata: %w", err)
	}
	if info.Parent, err = parentOf(img); err != nil {
		return info, err
	}
	if info.ClusterFSID, err = c.fsid(); err != nil {
		return info, fmt.Errorf("cluster fsid: %w", err)
	}
	return info, nil
}

// SetMetadata implements ceph.Backend.
func (b *Backend) SetMetadata(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, md map[string]string) error {
	return b.onPool(ctx, "set metadata of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, false, func(img *rbd.Image) error { return setMetadata(img, md) })
	})
}

func setMetadata(img *rbd.Image, md map[string]string) error {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := img.SetMetadata(k, md[k]); err != nil {
			return fmt.Errorf("set %s: %w", k, err)
		}
	}
	return nil
}

// RemoveMetadata implements ceph.Backend.
func (b *Backend) RemoveMetadata(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, key string) error {
	return b.onPool(ctx, "remove metadata of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, false, func(img *rbd.Image) error {
			err := img.RemoveMetadata(key)
			if errors.Is(err, rbd.ErrNotFound) {
				return nil // removed already: a retry
			}
			return err
		})
	})
}

// ResizeImage implements ceph.Backend.
func (b *Backend) ResizeImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, size uint64) error {
	return b.onPool(ctx, "resize image", ref, cr, func(_ *conn, io *rados.IOContext) error {
		return withImage(io, ref.Name, false, func(img *rbd.Image) error { return img.Resize(size) })
	})
}

// TrashImage implements ceph.Backend.
func (b *Backend) TrashImage(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]string, error) {
	var ids []string
	err := b.onPool(ctx, "move to trash", ref, cr, func(_ *conn, io *rados.IOContext) error {
		id, err := readImageID(io, ref.Name)
		if err != nil {
			if !isErrno(err, syscall.ENOENT) {
				return err
			}
			// Gone, or moved (perhaps half way) by an earlier attempt.
			trashed, ferr := finishTrashMovesOf(io, ref.Name)
			if ferr != nil {
				// Not "gone": a delete answered as done would leave the
				// entry for nobody to purge.
				return ferr
			}
			if len(trashed) == 0 {
				return err
			}
			ids = trashed
			return nil
		}
		ids = []string{id}
		failpoint.Crash("trash-before-move")
		err = rbd.GetImage(io, ref.Name).Trash(0)
		if isErrno(err, syscall.EEXIST) {
			// An earlier attempt added the trash entry and died.
			return finishTrashMove(io, ref.Name, id)
		}
		return err
	})
	return ids, err
}

// ListTrash implements ceph.Backend.
func (b *Backend) ListTrash(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]ceph.TrashEntry, error) {
	var out []ceph.TrashEntry
	ref := ceph.ImageRef{Cluster: cl, Pool: pool}
	err := b.onPool(ctx, "list trash of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		recs, err := trashRecords(io)
		if err != nil {
			return err
		}
		for _, r := range recs {
			out = append(out, ceph.TrashEntry{ID: r.id, Name: r.name, DeletionTime: r.deleted})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// mgrFresh is how long a positive "mgr is active" check is trusted.
const mgrFresh = time.Minute

// PurgeTrash implements ceph.Backend.
func (b *Backend) PurgeTrash(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool, id string, async bool) error {
	ref := ceph.ImageRef{Cluster: cl, Pool: pool, Name: id}
	if !async {
		return b.onPool(ctx, "purge trash entry", ref, cr, func(_ *conn, io *rados.IOContext) error {
			return rbd.TrashRemove(io, id, true)
		})
	}
	return b.run(ctx, "schedule trash purge of", ref.String(), cl, cr, func(c *conn) error {
		if !c.mgrActive() {
			return ceph.ErrNoManager
		}
		_, err := admin.NewFromConn(c.rc).Task().AddTrashRemove(admin.NewImageSpec(pool, cl.RadosNamespace, id))
		return err
	})
}

// mgrActive asks the monitors whether a ceph-mgr is active: a mgr command
// sent with none active would wait for the full op timeout. It reads the
// mgr map from "status", which a user limited to mon 'profile rbd' may run:
// "mgr stat" needs mon caps on the mgr service that profile lacks, and a
// refusal there made every such user's purges and flattens run in the
// driver although the mgr would have taken them.
func (c *conn) mgrActive() bool {
	c.mu.Lock()
	fresh := time.Since(c.mgrSeen) < mgrFresh
	c.mu.Unlock()
	if fresh {
		return true
	}
	out, _, err := c.rc.MonCommand([]byte(`{"prefix":"status","format":"json"}`))
	if err != nil {
		return false
	}
	var st struct {
		MgrMap struct {
			Available bool `json:"available"`
		} `json:"mgrmap"`
	}
	if json.Unmarshal(out, &st) != nil || !st.MgrMap.Available {
		return false
	}
	c.mu.Lock()
	c.mgrSeen = time.Now()
	c.mu.Unlock()
	return true
}

// ListImages implements ceph.Backend.
func (b *Backend) ListImages(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) ([]string, error) {
	var names []string
	ref := ceph.ImageRef{Cluster: cl, Pool: pool}
	err := b.onPool(ctx, "list images of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		var err error
		names, err = rbd.GetImageNames(io)
		sort.Strings(names)
		return err
	})
	return names, err
}

// PoolUsage implements ceph.Backend.
func (b *Backend) PoolUsage(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) (ceph.PoolUsage, error) {
	var u ceph.PoolUsage
	err := b.run(ctx, "read usage of pool", pool, cl, cr, func(c *conn) error {
		var err error
		u, err = poolUsage(c.rc, pool)
		return err
	})
	return u, err
}

func poolUsage(rc *rados.Conn, pool string) (ceph.PoolUsage, error) {
	var df struct {
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				Stored   uint64 `json:"stored"`
				MaxAvail uint64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := monJSON(rc, map[string]string{"prefix": "df", "format": "json"}, &df); err != nil {
		return ceph.PoolUsage{}, err
	}
	var u ceph.PoolUsage
	found := false
	for _, p := range df.Pools {
		if p.Name == pool {
			u.UsedBytes, u.MaxAvail, found = p.Stats.Stored, p.Stats.MaxAvail, true
		}
	}
	if !found {
		if _, err := rc.GetPoolByName(pool); err == nil {
			return u, fmt.Errorf("pool %s is missing from the monitor's usage report (a monitor or mgr that just restarted has none yet): %w", pool, ceph.ErrUnavailable)
		}
		return u, fmt.Errorf("pool %s: %w", pool, ceph.ErrNotFound)
	}
	var quota struct {
		MaxBytes uint64 `json:"quota_max_bytes"`
	}
	if err := monJSON(rc, map[string]string{"prefix": "osd pool get-quota", "pool": pool, "format": "json"}, &quota); err != nil {
		return u, err
	}
	u.QuotaBytes = quota.MaxBytes
	return u, nil
}

// RBDPools implements ceph.Backend with one monitor command.
func (b *Backend) RBDPools(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster) ([]string, error) {
	var out []string
	err := b.run(ctx, "list the RBD pools of", "the cluster", cl, cr, func(c *conn) error {
		var pools []struct {
			Name         string                     `json:"pool_name"`
			Applications map[string]json.RawMessage `json:"application_metadata"`
		}
		if err := monJSON(c.rc, map[string]string{"prefix": "osd pool ls", "detail": "detail", "format": "json"}, &pools); err != nil {
			return err
		}
		for _, p := range pools {
			if _, ok := p.Applications["rbd"]; ok {
				out = append(out, p.Name)
			}
		}
		sort.Strings(out)
		return nil
	})
	return out, err
}

func monJSON(rc *rados.Conn, cmd map[string]string, out any) error {
	req, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	res, status, err := rc.MonCommand(req)
	if err != nil {
		return fmt.Errorf("%s: %w (%s)", cmd["prefix"], err, status)
	}
	if err := json.Unmarshal(res, out); err != nil {
		return fmt.Errorf("%s: unexpected reply: %w", cmd["prefix"], err)
	}
	return nil
}

// Watchers implements ceph.Backend.
func (b *Backend) Watchers(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]ceph.Watcher, error) {
	var out []ceph.Watcher
	err := b.onPool(ctx, "list watchers of", ref, cr, func(c *conn, io *rados.IOContext) error {
		self := c.rc.GetInstanceID()
		return withImage(io, ref.Name, true, func(img *rbd.Image) error {
			ws, err := img.ListWatchers()
			if err != nil {
				return err
			}
			for _, w := range ws {
				if uint64(w.Id) != self {
					out = append(out, ceph.Watcher{Addr: w.Addr, Client: uint64(w.Id)})
				}
			}
			return nil
		})
	})
	return out, err
}

// PoolID implements ceph.Backend.
func (b *Backend) PoolID(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool string) (int64, error) {
	var id int64
	err := b.run(ctx, "look up pool", pool, cl, cr, func(c *conn) error {
		var err error
		id, err = c.rc.GetPoolByName(pool)
		return err
	})
	return id, err
}

// PoolName implements ceph.Backend.
func (b *Backend) PoolName(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, id int64) (string, error) {
	var name string
	err := b.run(ctx, "look up pool", fmt.Sprintf("id %d", id), cl, cr, func(c *conn) error {
		var err error
		name, err = c.rc.GetPoolByID(id)
		return err
	})
	return name, err
}

// onPool runs fn with the pool's I/O context.
func (b *Backend) onPool(ctx context.Context, op string, ref ceph.ImageRef, cr ceph.Credentials, fn func(*conn, *rados.IOContext) error) error {
	return b.run(ctx, op, ref.String(), ref.Cluster, cr, func(c *conn) error {
		io, err := c.ioctx(ref.Pool, ref.Cluster.RadosNamespace)
		if err != nil {
			return err
		}
		return fn(c, io)
	})
}

// withImage opens the image, runs fn and closes it on every path.
func withImage(io *rados.IOContext, name string, readOnly bool, fn func(*rbd.Image) error) error {
	open := rbd.OpenImage
	if readOnly {
		open = rbd.OpenImageReadOnly
	}
	img, err := open(io, name, rbd.NoSnapshot)
	if err != nil {
		return err
	}
	ferr := fn(img)
	cerr := img.Close()
	return errors.Join(ferr, cerr)
}

// Unwritten implements ceph.Backend: it stats the data objects holding
// ranges, all at once.
func (b *Backend) Unwritten(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, h ceph.ImageHeader, ranges []ceph.ByteRange) (bool, error) {
	if h.HasParent || h.Features&(ceph.FeatureDataPool|ceph.FeatureStripingV2) != 0 || h.Order == 0 || h.ID == "" {
		return false, nil
	}
	objects := objectsHolding(h.Order, h.Size, ranges)
	unwritten := true
	err := b.onPool(ctx, "look for the data objects of", ref, cr, func(_ *conn, io *rados.IOContext) error {
		errs := make(chan error, len(objects))
		for _, n := range objects {
			go func() {
				_, err := io.Stat(dataObject(h.ID, n))
				errs <- err
			}()
		}
		var first error
		for range objects {
			err := <-errs
			switch {
			case err == nil:
				unwritten = false
			case !isErrno(err, syscall.ENOENT) && first == nil:
				first = fmt.Errorf("stat a data object of image ID %s: %w", h.ID, err)
			}
		}
		return first
	})
	if err != nil {
		return false, err
	}
	return unwritten, nil
}

// objectsHolding lists, once each, the numbers of the objects of an image
// of size bytes and objects of 2^order bytes that hold ranges (clipped to
// the image).
func objectsHolding(order uint8, size uint64, ranges []ceph.ByteRange) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, r := range ranges {
		if r.Length == 0 || r.Offset >= size {
			continue
		}
		end := min(r.Offset+r.Length, size) - 1
		for n := r.Offset >> order; n <= end>>order; n++ {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
