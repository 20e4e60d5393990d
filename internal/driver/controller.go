package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/attach"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

const (
	mib = 1 << 20
	gib = 1 << 30
	// defaultSize is used when the request gives no capacity.
	defaultSize = 1 * gib
	// metaOwner is the image-meta key recording who the image was made for:
	// `rbd image-meta get POOL/IMAGE rbd-csi.owner`.
	metaOwner = "rbd-csi.owner"
)

// owner is the JSON stored under metaOwner.
type owner struct {
	Name         string `json:"name"`
	Instance     string `json:"instance,omitempty"`
	PVCName      string `json:"pvcName,omitempty"`
	PVCNamespace string `json:"pvcNamespace,omitempty"`
	PVName       string `json:"pvName,omitempty"`
	// User is the cephx user the volume ID records (version 2), for
	// ListVolumes to hand out the same ID.
	User string `json:"cephxUser,omitempty"`
}

// ControllerGetCapabilities implements csi.ControllerServer.
func (d *controllerService) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	rpcs := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	}
	caps := make([]*csi.ControllerServiceCapability, 0, len(rpcs))
	for _, t := range rpcs {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// createPlan is everything CreateVolume decided before touching Ceph.
type createPlan struct {
	params params.Volume
	who    identity
	creds  ceph.Credentials // who.creds
	ref    ceph.ImageRef
	size   uint64
	limit  uint64
	block  bool
	// sizeGiven is false when the request names no size: a volume made
	// from a content source then takes the source's size.
	sizeGiven bool
	// kms keeps the volume's DEK; nil for an unencrypted volume.
	kms kms.KMS
}

// CreateVolume implements csi.ControllerServer. The image name is derived
// from the request name (params.ImageName), so the whole operation is one
// exclusive create plus one metadata write; a retry after a crash at any
// point lands on the same image and finishes what is missing.
func (d *controllerService) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (_ *csi.CreateVolumeResponse, err error) {
	var plan createPlan
	defer explainAuth(&err, &plan.who)
	plan, err = d.planCreate(req)
	if err != nil {
		return nil, err
	}
	unlock, err := d.locks.Lock(ctx, "create/"+req.GetName())
	if err != nil {
		return nil, lockStatus(err, "volume "+req.GetName())
	}
	defer unlock()

	poolID, err := d.opts.Backend.PoolID(ctx, plan.creds, plan.ref.Cluster, plan.ref.Pool)
	if err != nil {
		return nil, poolStatus(err, plan.ref.Pool)
	}
	volumeID, err := encodeID(plan.ref, poolID, plan.who.record)
	if err != nil {
		return nil, invalid("%v", err)
	}
	d.usedPools.remember(plan.ref.Cluster, plan.ref.Pool, plan.creds)
	var size uint64
	if cs := req.GetVolumeContentSource(); cs != nil {
		size, err = d.ensureClone(ctx, req.GetName(), plan, cs) // snapshot_clone.go
	} else {
		size, err = d.ensureImage(ctx, req.GetName(), plan)
	}
	if err != nil {
		return nil, err
	}
	failpoint.Crash("create-before-reply")
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      volumeID,
		CapacityBytes: int64(size),
		VolumeContext: volumeContext(plan),
		ContentSource: req.GetVolumeContentSource(),
	}}, nil
}

func (d *controllerService) planCreate(req *csi.CreateVolumeRequest) (createPlan, error) {
	if req.GetName() == "" {
		return createPlan{}, invalid("name is required")
	}
	block, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return createPlan{}, err
	}
	p, err := params.ParseVolume(req.GetParameters())
	if err != nil {
		return createPlan{}, statusOf(err, "")
	}
	cl, err := d.clusterFor(p)
	if err != nil {
		return createPlan{}, err
	}
	_, hasAdmin := req.GetParameters()[params.KeyAdminID]
	who, err := resolveIdentity(req.GetSecrets(), "provisioner secrets", parameterHint(p.AdminID, hasAdmin, "StorageClass parameter "+params.KeyAdminID))
	if err != nil {
		return createPlan{}, err
	}
	size, limit, err := capacity(req.GetCapacityRange())
	if err != nil {
		return createPlan{}, err
	}
	ref := ceph.ImageRef{Cluster: cl, Pool: p.Pool, Name: params.ImageName(p.Prefix, d.opts.InstanceID, req.GetName())}
	plan := createPlan{params: p, who: who, creds: who.creds, ref: ref, size: size, limit: limit, block: block, sizeGiven: req.GetCapacityRange().GetRequiredBytes() > 0}
	if p.Encryption.Enabled {
		if plan.kms, err = d.opts.KMS.Open(p.Encryption.KMSID, req.GetSecrets(), "provisioner secrets"); err != nil {
			return createPlan{}, statusOf(err, "encrypted volume "+req.GetName())
		}
	}
	return plan, nil
}

// newKeyMetadata draws the DEK of a new encrypted volume and returns its
// wrap as image-meta (nil for an unencrypted volume). It is written with
// the image's first metadata, so no encrypted image exists without a key.
func newKeyMetadata(ctx context.Context, plan createPlan) (map[string]string, error) {
	if plan.kms == nil {
		return nil, nil
	}
	dek, err := kms.NewDEK()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume key of %s: %v", plan.ref, err)
	}
	return wrapMetadata(ctx, plan, dek)
}

// wrapMetadata wraps dek for plan's image, as image-meta.
func wrapMetadata(ctx context.Context, plan createPlan, dek kms.DEK) (map[string]string, error) {
	blob, err := plan.kms.Wrap(ctx, dek, plan.ref.Name)
	if err != nil {
		return nil, statusOf(err, "wrap the volume key of "+plan.ref.String())
	}
	return map[string]string{kms.MetaDEK: blob}, nil
}

// ensureImage creates the image or adopts the one an earlier attempt made.
func (d *controllerService) ensureImage(ctx context.Context, name string, plan createPlan) (uint64, error) {
	record, err := json.Marshal(owner{
		Name: name, Instance: d.opts.InstanceID, User: plan.who.record,
		PVCName: plan.params.Claim.PVCName, PVCNamespace: plan.params.Claim.PVCNamespace, PVName: plan.params.Claim.PVName,
	})
	if err != nil {
		return 0, status.Errorf(codes.Internal, "encode owner record: %v", err)
	}
	keys, err := newKeyMetadata(ctx, plan)
	if err != nil {
		return 0, err
	}
	spec := ceph.ImageSpec{Size: plan.size, Features: plan.params.Features, DataPool: plan.params.DataPool, Metadata: map[string]string{metaOwner: string(record)}}
	maps.Copy(spec.Metadata, keys)
	err = d.opts.Backend.CreateImage(ctx, plan.creds, plan.ref, spec)
	if err == nil {
		return plan.size, nil
	}
	if !errors.Is(err, ceph.ErrExists) {
		return 0, createStatus(err, plan)
	}
	return d.adoptImage(ctx, name, plan, spec)
}

// adoptImage handles an image that already has the derived name: a retry, a
// concurrent caller, or a creation cut short by a crash.
func (d *controllerService) adoptImage(ctx context.Context, name string, plan createPlan, spec ceph.ImageSpec) (uint64, error) {
	info, err := d.statOrReplace(ctx, plan, spec)
	if err != nil {
		return 0, err
	}
	if info == nil {
		return plan.size, nil
	}
	if err := compatible(*info, name, plan); err != nil {
		return 0, err
	}
	if _, ok := info.Metadata[metaOwner]; !ok {
		// Created, but the process died before the owner record (and the
		// wrapped key, written with it) was written. A key already there
		// stays: a volume never gets a second one.
		md := maps.Clone(spec.Metadata)
		if _, ok := info.Metadata[kms.MetaDEK]; ok {
			delete(md, kms.MetaDEK)
		}
		if err := d.opts.Backend.SetMetadata(ctx, plan.creds, plan.ref, md); err != nil {
			return 0, statusOf(err, "record owner of "+plan.ref.String())
		}
	}
	return info.Size, nil
}

// defaultPartialWait is how long CreateVolume waits for an image under its
// name that cannot be opened yet to become whole before answering Aborted.
// A create running elsewhere (a second controller) takes milliseconds.
const defaultPartialWait = 5 * time.Second

// statOrReplace returns the image under plan's name, or nil once it has
// replaced pieces an interrupted create left there with a new image.
func (d *controllerService) statOrReplace(ctx context.Context, plan createPlan, spec ceph.ImageSpec) (*ceph.ImageInfo, error) {
	deadline := time.Now().Add(d.partialWait)
	for {
		info, err := d.opts.Backend.StatImage(ctx, plan.creds, plan.ref)
		if err == nil {
			return &info, nil
		}
		if !errors.Is(err, ceph.ErrNotFound) {
			return nil, statusOf(err, "inspect existing image "+plan.ref.String())
		}
		// The name is taken but the image cannot be opened: librbd was
		// interrupted between writing the name and the header, or is still
		// writing them. The backend removes the pieces only in the first case.
		err = d.opts.Backend.RemovePartialImage(ctx, plan.creds, plan.ref)
		if err == nil || errors.Is(err, ceph.ErrNotFound) {
			klog.InfoS("Replacing a partially created image", "image", plan.ref)
			err = d.opts.Backend.CreateImage(ctx, plan.creds, plan.ref, spec)
			if err == nil {
				return nil, nil
			}
			if !errors.Is(err, ceph.ErrExists) {
				return nil, createStatus(err, plan)
			}
		} else if !errors.Is(err, ceph.ErrInProgress) {
			return nil, statusOf(err, "clean up partially created image "+plan.ref.String())
		}
		// Someone else is creating the name: look again shortly.
		if time.Now().After(deadline) {
			return nil, status.Errorf(codes.Aborted, "image %s could not be opened within %v of finding its name taken: %v; retry later", plan.ref, d.partialWait, err)
		}
		if err := pause(ctx, 250*time.Millisecond); err != nil {
			return nil, statusOf(err, "wait for image "+plan.ref.String())
		}
	}
}

// pause sleeps for d or until ctx ends, and then returns ctx's error.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// compatible decides whether an existing image satisfies a repeated request.
func compatible(info ceph.ImageInfo, name string, plan createPlan) error {
	if raw, ok := info.Metadata[metaOwner]; ok {
		var o owner
		if err := json.Unmarshal([]byte(raw), &o); err == nil && o.Name != name {
			return status.Errorf(codes.AlreadyExists, "image %s belongs to request %q, not %q", plan.ref, o.Name, name)
		}
	}
	if info.Size < plan.size || (plan.limit > 0 && info.Size > plan.limit) {
		return status.Errorf(codes.AlreadyExists, "volume %q exists with size %d bytes, outside the requested range [%d, %d]", name, info.Size, plan.size, plan.limit)
	}
	if got := info.Features & ceph.UserFeatures; got != plan.params.Features {
		return status.Errorf(codes.AlreadyExists, "volume %q exists with imageFeatures %q, not %q", name, got, plan.params.Features)
	}
	if info.DataPool != plan.params.DataPool {
		return status.Errorf(codes.AlreadyExists, "volume %q exists with dataPool %q, not %q", name, info.DataPool, plan.params.DataPool)
	}
	_, hasOwner := info.Metadata[metaOwner]
	if _, hasKey := info.Metadata[kms.MetaDEK]; hasOwner && hasKey != plan.params.Encryption.Enabled {
		return status.Errorf(codes.AlreadyExists, "volume %q exists with %s=%v, not %v", name, params.KeyEncrypted, hasKey, plan.params.Encryption.Enabled)
	}
	return nil
}

func createStatus(err error, plan createPlan) error {
	if errors.Is(err, ceph.ErrNotFound) && plan.params.DataPool != "" {
		return status.Errorf(codes.InvalidArgument, "create image %s: pool %q or dataPool %q does not exist: %v", plan.ref, plan.ref.Pool, plan.params.DataPool, err)
	}
	if errors.Is(err, ceph.ErrNotFound) {
		return status.Errorf(codes.InvalidArgument, "create image %s: pool %q does not exist: %v", plan.ref, plan.ref.Pool, err)
	}
	if errors.Is(err, ceph.ErrNoSpace) {
		return status.Errorf(codes.ResourceExhausted, "create image %s: pool %q is full or over quota: %v", plan.ref, plan.ref.Pool, err)
	}
	return statusOf(err, "create image "+plan.ref.String())
}

func poolStatus(err error, pool string) error {
	if errors.Is(err, ceph.ErrNotFound) {
		return status.Errorf(codes.InvalidArgument, "pool %q does not exist: create it (`ceph osd pool create %s` and `rbd pool init %s`) or fix the pool parameter", pool, pool, pool)
	}
	return statusOf(err, "look up pool "+pool)
}

func volumeContext(plan createPlan) map[string]string {
	vc := map[string]string{
		"pool":      plan.ref.Pool,
		"imageName": plan.ref.Name,
	}
	if plan.ref.Cluster.ID != "" {
		vc[params.KeyClusterID] = plan.ref.Cluster.ID
	}
	if plan.params.UserID != "" {
		vc[params.KeyUserID] = plan.params.UserID
	}
	if plan.params.Mounter != "" {
		vc[params.KeyMounter] = plan.params.Mounter
	}
	if plan.params.MapOpts != "" {
		vc[params.KeyMapOptions] = plan.params.MapOpts
	}
	maps.Copy(vc, plan.params.Encryption.Context())
	return vc
}

// capacity turns a CSI capacity range into the size to create (rounded up
// to whole MiB where the limit allows) and the limit (0 = none).
func capacity(r *csi.CapacityRange) (size, limit uint64, err error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, 0, invalid("capacity range must not be negative (required %d, limit %d)", req, lim)
	}
	if lim > 0 && req > lim {
		return 0, 0, status.Errorf(codes.OutOfRange, "required_bytes %d exceeds limit_bytes %d", req, lim)
	}
	size = uint64(req)
	if size == 0 {
		size = defaultSize
		if lim > 0 && uint64(lim) < size {
			size = uint64(lim)
		}
	}
	rounded := (size + mib - 1) / mib * mib
	if lim == 0 || rounded <= uint64(lim) {
		size = rounded
	}
	return size, uint64(lim), nil
}

// checkCapabilities validates access types and modes and reports whether
// the volume is a raw block volume.
func checkCapabilities(caps []*csi.VolumeCapability) (block bool, err error) {
	if len(caps) == 0 {
		return false, invalid("volume_capabilities are required")
	}
	for _, c := range caps {
		isBlock, err := checkCapability(c)
		if err != nil {
			return false, err
		}
		block = block || isBlock
	}
	return block, nil
}

func checkCapability(c *csi.VolumeCapability) (block bool, err error) {
	switch {
	case c.GetBlock() != nil:
		block = true
	case c.GetMount() != nil:
		if fs := c.GetMount().GetFsType(); fs != "" && fs != "ext4" && fs != "xfs" {
			return false, invalid("fs_type %q is not supported: use ext4 or xfs", fs)
		}
	default:
		return false, invalid("volume capability needs an access type (mount or block)")
	}
	switch mode := c.GetAccessMode().GetMode(); mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		if !block {
			return false, invalid("access mode %s needs a block volume: a filesystem on RBD mounted by several nodes would be corrupted; use volumeMode: Block or a single-node mode", mode)
		}
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return false, invalid("access mode is required")
	default:
		return false, invalid("access mode %s is not supported: RBD volumes are single-node, or multi-node-multi-writer for block volumes", mode)
	}
	return block, nil
}

// DeleteVolume implements csi.ControllerServer. The image moves to the RBD
// trash (constant time whatever its size) and is purged in the background by
// the ceph-mgr, or by the driver when no mgr takes the task.
func (d *controllerService) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (_ *csi.DeleteVolumeResponse, err error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	id, err := volid.Decode(req.GetVolumeId())
	if err != nil {
		// Not an ID this driver produced: it cannot name one of our images.
		klog.InfoS("DeleteVolume of a foreign volume ID: nothing to do", "volume", req.GetVolumeId(), "reason", err)
		return &csi.DeleteVolumeResponse{}, nil
	}
	unlock, err := d.locks.Lock(ctx, "volume/"+req.GetVolumeId())
	if err != nil {
		return nil, lockStatus(err, "volume "+req.GetVolumeId())
	}
	defer unlock()
	who, err := resolveIdentity(req.GetSecrets(), "provisioner secrets", idHint(id))
	if err != nil {
		return nil, err
	}
	defer explainAuth(&err, &who)
	creds := who.creds
	ref, err := d.imageRef(ctx, id, creds)
	if errors.Is(err, errPoolGone) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	d.usedPools.remember(ref.Cluster, ref.Pool, creds)
	store := attach.Store{Backend: d.opts.Backend, Creds: creds}
	hasRecord, err := refuseAttached(ctx, store, ref)
	if err != nil {
		return nil, err
	}
	if err := d.dropTempSnaps(ctx, creds, ref); err != nil {
		return nil, err
	}
	if err := d.trashAndPurge(ctx, creds, ref); err != nil {
		return nil, err
	}
	// After the image: a crash in between leaves a record a retry drops.
	// A volume never attached has none, and spares the round trip.
	failpoint.Crash("delete-before-drop-attachments")
	if !hasRecord {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err := store.Drop(ctx, ref); err != nil {
		return nil, statusOf(err, "drop the attachment record of "+ref.String())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// refuseAttached is FailedPrecondition while a node holds the volume (the
// CSI spec's answer for DeleteVolume of a published volume); it reports
// whether the volume has a record at all.
func refuseAttached(ctx context.Context, store attach.Store, ref ceph.ImageRef) (bool, error) {
	rec, stored, err := store.Load(ctx, ref)
	if err != nil {
		return false, statusOf(err, "read attachments of "+ref.String())
	}
	if nodes := rec.Nodes(); len(nodes) > 0 {
		return true, status.Errorf(codes.FailedPrecondition, "volume image %s is still attached to node(s) %q: delete the pods using it (Kubernetes then detaches it) and retry", ref, nodes)
	}
	return stored != nil, nil
}

// dropTempSnaps removes the temporary snapshots that snapshots or clones of
// the volume left when the CO gave up on them after a crash: nothing else
// would, and a snapshot keeps the volume's trash purge from ever
// succeeding. One a finished clone still reads through moves to the
// snapshot trash namespace, so the clone loses nothing. A snapshot or clone
// of a volume being deleted cannot complete anyway.
func (d *controllerService) dropTempSnaps(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) error {
	snaps, err := d.opts.Backend.ListSnaps(ctx, creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil // already in the trash (a retry), or gone
	}
	if err != nil {
		return statusOf(err, "list snapshots of "+ref.String())
	}
	for _, snap := range snaps {
		if !params.IsTempSnapName(snap) {
			continue
		}
		klog.InfoS("Removing a temporary snapshot that an abandoned snapshot or clone left on the volume", "image", ref, "snapshot", snap)
		if err := d.opts.Backend.RemoveSnap(ctx, creds, ref, snap); err != nil && !errors.Is(err, ceph.ErrNotFound) {
			return statusOf(err, "remove temporary snapshot "+snap+" of "+ref.String())
		}
	}
	return nil
}

func (d *controllerService) trashAndPurge(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) error {
	trashIDs, err := d.opts.Backend.TrashImage(ctx, creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil // neither in the pool nor in its trash: gone already
	}
	if errors.Is(err, ceph.ErrBusy) {
		return d.busyStatus(ctx, creds, ref, err)
	}
	if err != nil {
		return statusOf(err, "move "+ref.String()+" to the trash")
	}
	// On a retry the IDs are those of every trash entry under the name,
	// the one an earlier attempt trashed and died before scheduling among
	// them: scheduling them all finishes that attempt's work (the mgr takes
	// a task it already has as the same task).
	failpoint.Crash("trash-before-purge")
	for _, id := range trashIDs {
		d.purger.schedule(ctx, creds, ref.Cluster, ref.Pool, id, ref.Name)
	}
	return nil
}

func (d *controllerService) busyStatus(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef, cause error) error {
	ws, err := d.opts.Backend.Watchers(ctx, creds, ref)
	if err != nil || len(ws) == 0 {
		return status.Errorf(codes.FailedPrecondition, "volume image %s is in use or has snapshots: %v", ref, cause)
	}
	return status.Errorf(codes.FailedPrecondition, "volume image %s is still open by client %d at %s: unmount it there first (rbd status %s)", ref, ws[0].Client, ws[0].Addr, ref)
}

var errPoolGone = errors.New("pool no longer exists")

// imageRef resolves a decoded ID to the image it names.
func (d *shared) imageRef(ctx context.Context, id volid.ID, creds ceph.Credentials) (ceph.ImageRef, error) {
	cl, err := d.clusterForID(id)
	if err != nil {
		return ceph.ImageRef{}, err
	}
	pool, err := d.opts.Backend.PoolName(ctx, creds, cl, id.PoolID)
	if errors.Is(err, ceph.ErrNotFound) {
		return ceph.ImageRef{}, errPoolGone
	}
	if err != nil {
		return ceph.ImageRef{}, statusOf(err, fmt.Sprintf("look up pool %d", id.PoolID))
	}
	return ceph.ImageRef{Cluster: cl, Pool: pool, Name: id.Image}, nil
}

// encodeID is the ID of the volume ref; user is the cephx user to record
// (identity.record), "" for none.
func encodeID(ref ceph.ImageRef, poolID int64, user string) (string, error) {
	return volid.ID{ClusterID: ref.Cluster.ID, Monitors: ref.Cluster.Monitors, PoolID: poolID, Image: ref.Name, User: user}.Encode()
}

// encodeSnapshotID is the ID of the CSI snapshot held by the snapshot image
// ref (its RBD snapshot snapName).
func encodeSnapshotID(ref ceph.ImageRef, poolID int64, user string) (string, error) {
	ref.Name += "@" + snapName
	return encodeID(ref, poolID, user)
}

// ControllerExpandVolume implements csi.ControllerServer: RBD grows online.
func (d *controllerService) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (_ *csi.ControllerExpandVolumeResponse, err error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, invalid("capacity_range is required")
	}
	size, limit, err := capacity(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	var who identity
	defer explainAuth(&err, &who)
	ref, unlock, err := d.lockedVolume(ctx, req.GetVolumeId(), req.GetSecrets(), &who)
	if err != nil {
		return nil, err
	}
	defer unlock()
	creds := who.creds
	info, err := d.opts.Backend.StatImage(ctx, creds, ref)
	if err != nil {
		return nil, statusOf(err, "inspect "+ref.String())
	}
	if limit > 0 && info.Size > limit {
		return nil, status.Errorf(codes.OutOfRange, "volume is %d bytes, above limit_bytes %d: RBD volumes cannot shrink", info.Size, limit)
	}
	if info.Size < size {
		if err := d.opts.Backend.ResizeImage(ctx, creds, ref, size); err != nil {
			return nil, statusOf(err, "resize "+ref.String())
		}
		info.Size = size
	}
	// A LUKS device keeps its size until cryptsetup resize, block or not.
	_, encrypted := info.Metadata[kms.MetaDEK]
	block := req.GetVolumeCapability().GetBlock() != nil
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: int64(info.Size), NodeExpansionRequired: !block || encrypted}, nil
}

// lockedVolume decodes a volume ID, resolves the identity of its secrets
// into *who, takes the volume lock and resolves its image. Unknown IDs are
// NotFound, as the CSI spec asks of these calls.
func (d *controllerService) lockedVolume(ctx context.Context, volumeID string, secrets map[string]string, who *identity) (ceph.ImageRef, func(), error) {
	id, err := decodeVolumeID(volumeID)
	if err != nil {
		return ceph.ImageRef{}, nil, err
	}
	if *who, err = resolveIdentity(secrets, "secrets", idHint(id)); err != nil {
		return ceph.ImageRef{}, nil, err
	}
	return d.lockedRef(ctx, volumeID, id, who.creds)
}

// decodeVolumeID decodes a volume ID; one this driver cannot have made is
// NotFound.
func decodeVolumeID(volumeID string) (volid.ID, error) {
	id, err := volid.Decode(volumeID)
	if err != nil {
		return volid.ID{}, status.Errorf(codes.NotFound, "volume %q: %v", volumeID, err)
	}
	return id, nil
}

// lockedRef takes the volume lock and resolves the image of the decoded ID.
func (d *controllerService) lockedRef(ctx context.Context, volumeID string, id volid.ID, creds ceph.Credentials) (ceph.ImageRef, func(), error) {
	unlock, err := d.locks.Lock(ctx, "volume/"+volumeID)
	if err != nil {
		return ceph.ImageRef{}, nil, lockStatus(err, "volume "+volumeID)
	}
	ref, err := d.imageRef(ctx, id, creds)
	if errors.Is(err, errPoolGone) {
		err = status.Errorf(codes.NotFound, "volume %q: its pool no longer exists", volumeID)
	}
	if err != nil {
		unlock()
		return ceph.ImageRef{}, nil, err
	}
	return ref, unlock, nil
}

// ValidateVolumeCapabilities implements csi.ControllerServer.
func (d *controllerService) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (_ *csi.ValidateVolumeCapabilitiesResponse, err error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalid("volume_capabilities are required")
	}
	var who identity
	defer explainAuth(&err, &who)
	ref, unlock, err := d.lockedVolume(ctx, req.GetVolumeId(), req.GetSecrets(), &who)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := d.opts.Backend.ReadHeader(ctx, who.creds, ref); err != nil {
		return nil, statusOf(err, "volume "+req.GetVolumeId())
	}
	if _, err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}
