package librbd

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
)

// A create through librbd (rbd_create4) reads the pool's configuration
// overrides, writes the directory entry, the rbd_id.<name> object and the
// header, one round trip each; the owner record then costs two more (the
// ID read back, the image-meta write). For the images most volumes are
// (format 2, no data pool, no striping, no object map or journal, the
// default namespace) the driver writes those three objects itself with the
// same cls_rbd calls, the owner record in the same operation as the
// header: three round trips instead of six. Anything else, and any pool
// whose `rbd config pool` settings ask for more, goes through librbd.

// directFeatures are the features an image may have for the driver to make
// it itself: none of them needs anything written at creation beyond the
// header (object-map needs its map, journaling its journal).
const directFeatures = ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureDeepFlatten

// createDefaultsTTL is how long a pool's create settings are trusted: an
// `rbd config pool set POOL rbd_default_data_pool ...` made while the
// driver runs applies to its creates within this time.
const createDefaultsTTL = 30 * time.Second

// imageIDBytes random bytes make an image ID of twice as many hex digits:
// 14, the longest ID whose data object prefix ("rbd_data.<id>") the kernel
// client accepts.
const imageIDBytes = 7

// createDefaults are the settings librbd's create takes from configuration
// (the client's, overridden per pool) when a request does not give them.
type createDefaults struct {
	order       uint64
	stripeUnit  uint64
	stripeCount uint64
	dataPool    string
	readAt      time.Time
	err         error // why they could not be read: librbd creates
}

// direct says whether an image of spec in pool can be made without librbd
// under these settings.
func (d createDefaults) direct(pool string, spec ceph.ImageSpec) bool {
	if d.err != nil || !directSpec(spec) {
		return false
	}
	if d.dataPool != "" && d.dataPool != pool {
		return false
	}
	if d.order < 12 || d.order > 25 {
		return false // librbd answers EDOM
	}
	striped := (d.stripeUnit != 0 && d.stripeUnit != 1<<d.order) || (d.stripeCount != 0 && d.stripeCount != 1)
	return !striped
}

// directSpec says whether the request itself leaves the image to the
// driver (what the pool's settings say is checked apart, at a cost).
func directSpec(spec ceph.ImageSpec) bool {
	return spec.DataPool == "" && spec.Features&^directFeatures == 0
}

// createDefaultsOf returns pool's create settings, read again once they
// are older than createDefaultsTTL. io is the pool's default namespace.
func (c *conn) createDefaultsOf(pool string, io *rados.IOContext) createDefaults {
	c.mu.Lock()
	d, ok := c.defaults[pool]
	c.mu.Unlock()
	if ok && time.Since(d.readAt) < createDefaultsTTL {
		return d
	}
	d = c.readCreateDefaults(pool, io)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.defaults == nil {
		c.defaults = map[string]createDefaults{}
	}
	c.defaults[pool] = d
	return d
}

// createSettings are the options of createDefaults, by configuration name.
var createSettings = []string{"rbd_default_order", "rbd_default_stripe_unit", "rbd_default_stripe_count", "rbd_default_data_pool"}

// readCreateDefaults reads the client's settings (its configuration and
// the monitors' `ceph config`) and the pool's overrides of them: what
// `rbd config pool set` writes, pool metadata "conf_<name>", kept as
// image-meta is, under metadataPrefix, in the omap of the pool's rbd_info.
func (c *conn) readCreateDefaults(pool string, io *rados.IOContext) createDefaults {
	d := createDefaults{readAt: time.Now()}
	vals := make(map[string]string, len(createSettings))
	for _, name := range createSettings {
		v, err := c.rc.GetConfigOption(name)
		if err != nil {
			d.err = fmt.Errorf("read %s: %w", name, err)
			return d
		}
		vals[name] = v
	}
	const prefix = metadataPrefix + "conf_"
	overrides, err := io.GetOmapValues(poolInfoObject, "", prefix+"rbd_default_", 64)
	if err != nil && !isErrno(err, syscall.ENOENT) {
		d.err = fmt.Errorf("read the rbd config of pool %s: %w", pool, err)
		return d
	}
	for k, v := range overrides {
		vals[strings.TrimPrefix(k, prefix)] = string(v)
	}
	if d.order, err = strconv.ParseUint(vals["rbd_default_order"], 10, 8); err != nil {
		d.err = fmt.Errorf("rbd_default_order %q: %w", vals["rbd_default_order"], err)
		return d
	}
	if d.stripeUnit, err = strconv.ParseUint(vals["rbd_default_stripe_unit"], 10, 64); err != nil {
		d.err = fmt.Errorf("rbd_default_stripe_unit %q: %w", vals["rbd_default_stripe_unit"], err)
		return d
	}
	if d.stripeCount, err = strconv.ParseUint(vals["rbd_default_stripe_count"], 10, 64); err != nil {
		d.err = fmt.Errorf("rbd_default_stripe_count %q: %w", vals["rbd_default_stripe_count"], err)
		return d
	}
	d.dataPool = vals["rbd_default_data_pool"]
	return d
}

// createDirect makes the image with the cls_rbd calls librbd's create
// makes, rbd_id.<name> first: it takes the name (exclusively) and its
// mtime dates the attempt, so a crash at any point leaves what
// RemovePartialImage knows how to judge and remove. The owner record
// (spec.Metadata) goes in the header's own operation, so an image never
// exists without it. A step that fails takes back the ones before it.
func createDirect(io *rados.IOContext, name string, order uint64, spec ceph.ImageSpec) error {
	id, err := newImageID()
	if err != nil {
		return err
	}
	idOp := rados.CreateWriteOp()
	defer idOp.Release()
	idOp.Create(rados.CreateExclusive)
	idOp.Exec("rbd", "set_id", encodeStrings(id))
	if err := idOp.Operate(io, idObject(name), rados.OperationNoFlag); err != nil {
		return fmt.Errorf("take the name %s: %w", name, err)
	}
	failpoint.Crash("create-before-directory")
	if err := clsExec(io, "rbd_directory", "dir_add_image", encodeStrings(name, id)); err != nil {
		undoCreate(io, name, id, false)
		return fmt.Errorf("add %s to rbd_directory: %w", name, err)
	}
	failpoint.Crash("create-before-header")
	if err := writeHeader(io, id, order, spec); err != nil {
		undoCreate(io, name, id, true)
		return err
	}
	return nil
}

// writeHeader creates the header object of image id as cls_rbd's create
// does, with spec.Metadata as image-meta in the same operation.
func writeHeader(io *rados.IOContext, id string, order uint64, spec ceph.ImageSpec) error {
	in := binary.LittleEndian.AppendUint64(nil, spec.Size)
	in = append(in, byte(order))
	in = binary.LittleEndian.AppendUint64(in, uint64(spec.Features))
	in = append(in, encodeStrings(dataPrefix+id)...)
	in = binary.LittleEndian.AppendUint64(in, ^uint64(0)) // data pool ID -1: none
	op := rados.CreateWriteOp()
	defer op.Release()
	op.Create(rados.CreateExclusive)
	op.Exec("rbd", "create", in)
	if len(spec.Metadata) > 0 {
		op.SetOmap(metadataKeys(spec.Metadata))
	}
	err := op.Operate(io, headerObject(id), rados.OperationNoFlag)
	if isErrno(err, syscall.EEXIST) {
		// Not the name: the new ID. Reported apart from ErrExists, which
		// means the name is taken; a retry draws another ID.
		return fmt.Errorf("write the header of image ID %s: the ID is already in use", id)
	}
	if err != nil {
		return fmt.Errorf("write the header of image ID %s: %w", id, err)
	}
	return nil
}

// undoCreate removes what createDirect wrote before a step failed. It is
// best effort: what it leaves (its own calls may fail for the reason the
// step did) is the pieces a crash would leave, and RemovePartialImage
// removes those once they are old enough.
func undoCreate(io *rados.IOContext, name, id string, inDirectory bool) {
	_ = io.Delete(idObject(name))
	if inDirectory {
		_ = clsExec(io, "rbd_directory", "dir_remove_image", encodeStrings(name, id))
	}
}

// metadataKeys is md as the header's omap keys cls_rbd's metadata_set
// writes.
func metadataKeys(md map[string]string) map[string][]byte {
	vals := make(map[string][]byte, len(md))
	for k, v := range md {
		vals[metadataPrefix+k] = []byte(v)
	}
	return vals
}

// newImageID draws an image ID: lowercase hex, as librbd's are.
func newImageID() (string, error) {
	b := make([]byte, imageIDBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("draw an image ID: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// directCreate says whether the image can be made by createDirect, and
// with which object size (order): in the default namespace (librbd checks
// a namespace's state in the same operation as the directory entry), in a
// pool whose validation librbd has recorded, with settings that ask
// nothing of the create beyond the header. The request is looked at
// first: one librbd must make costs no read. io is the pool's.
func (c *conn) directCreate(io *rados.IOContext, ref ceph.ImageRef, spec ceph.ImageSpec) (uint64, bool, error) {
	if ref.Cluster.RadosNamespace != "" || !directSpec(spec) {
		return 0, false, nil
	}
	check, err := c.poolCheckResolved(ref.Pool)
	if err != nil || check != poolValidated {
		return 0, false, err
	}
	d := c.createDefaultsOf(ref.Pool, io)
	return d.order, d.direct(ref.Pool, spec), nil
}
