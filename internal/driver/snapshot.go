package driver

// A CSI snapshot is an image of its own, cloned from a temporary snapshot
// of its source (docs/design.md, "Snapshots and clones").

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// snapName is the RBD snapshot on a snapshot image that restores clone from.
const snapName = "csi-snap"

// kindSnapshot marks the owner record of a snapshot image.
const kindSnapshot = "snapshot"

// snapOwner is the owner record (image-meta rbd-csi.owner) of a snapshot
// image. Source and Created are what the CSI Snapshot reports, kept on the
// image because the source may be gone when the snapshot is listed.
type snapOwner struct {
	Kind              string `json:"kind"`
	Name              string `json:"name"`
	Instance          string `json:"instance,omitempty"`
	Source            string `json:"source"`
	Created           string `json:"created"` // RFC 3339, when the temporary snapshot was taken
	SnapshotName      string `json:"volumeSnapshotName,omitempty"`
	SnapshotNamespace string `json:"volumeSnapshotNamespace,omitempty"`
	ContentName       string `json:"volumeSnapshotContentName,omitempty"`
	// User is the cephx user the snapshot ID records (version 2), for
	// ListSnapshots to hand out the same ID.
	User string `json:"cephxUser,omitempty"`
	// Size is the snapshot's size in bytes and Depth the clone depth of the
	// snapshot image when it was made (its source's, plus one). A restore
	// reads them instead of opening the image and walking its ancestors:
	// an image never changes size after its snapshot is taken, and a depth
	// only shrinks (flattening), so Depth is an upper bound. 0 in records
	// of older versions, which a restore inspects the image for.
	Size  uint64 `json:"size,omitempty"`
	Depth int    `json:"depth,omitempty"`
}

// depthAtMost reports whether the record holds a depth (records of older
// versions do not) and that depth is at most bound.
func (r *snapOwner) depthAtMost(bound int) bool {
	return r.Depth >= 1 && r.Depth <= bound
}

// snapPlan is everything CreateSnapshot decided before touching Ceph.
type snapPlan struct {
	name     string
	sourceID string
	source   ceph.ImageRef
	target   ceph.ImageRef // the snapshot image
	who      identity
	creds    ceph.Credentials // who.creds
	params   params.Snapshot
}

// CreateSnapshot implements csi.ControllerServer.
func (d *controllerService) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (_ *csi.CreateSnapshotResponse, err error) {
	if req.GetName() == "" {
		return nil, invalid("name is required")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, invalid("source_volume_id is required")
	}
	p, err := params.ParseSnapshot(req.GetParameters())
	if err != nil {
		return nil, statusOf(err, "")
	}
	srcID, err := volid.Decode(req.GetSourceVolumeId())
	if err != nil || srcID.IsSnapshot() {
		return nil, status.Errorf(codes.NotFound, "source volume %q does not exist: not a volume ID of this driver", req.GetSourceVolumeId())
	}
	// A key-only Secret is for the user the source volume's ID records:
	// the snapshot inherits it.
	who, err := resolveIdentity(req.GetSecrets(), "snapshotter secrets", idHint(srcID))
	if err != nil {
		return nil, err
	}
	defer explainAuth(&err, &who)
	unlock, err := d.locks.Lock(ctx, "snapshot/"+req.GetName())
	if err != nil {
		return nil, lockStatus(err, "snapshot "+req.GetName())
	}
	defer unlock()
	plan, poolID, err := d.planSnapshot(ctx, req, p, srcID, who)
	if err != nil {
		return nil, err
	}
	snap, err := d.ensureSnapshot(ctx, plan, poolID)
	if err != nil {
		return nil, err
	}
	failpoint.Crash("snapshot-before-reply")
	return &csi.CreateSnapshotResponse{Snapshot: snap}, nil
}

// planSnapshot resolves the source volume and the snapshot image's place.
func (d *controllerService) planSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest, p params.Snapshot, srcID volid.ID, who identity) (snapPlan, int64, error) {
	creds := who.creds
	if p.ClusterID != "" && p.ClusterID != srcID.ClusterID {
		return snapPlan{}, 0, invalid("parameter clusterID %q: the source volume is in cluster %q, and a snapshot lives in its volume's cluster", p.ClusterID, srcID.ClusterID)
	}
	src, err := d.imageRef(ctx, srcID, creds)
	if errors.Is(err, errPoolGone) {
		return snapPlan{}, 0, status.Errorf(codes.NotFound, "source volume %q: its pool no longer exists", req.GetSourceVolumeId())
	}
	if err != nil {
		return snapPlan{}, 0, err
	}
	pool := src.Pool
	if p.Pool != "" {
		pool = p.Pool
	}
	poolID, err := d.opts.Backend.PoolID(ctx, creds, src.Cluster, pool)
	if err != nil {
		return snapPlan{}, 0, poolStatus(err, pool)
	}
	target := ceph.ImageRef{Cluster: src.Cluster, Pool: pool, Name: params.SnapshotImageName(d.opts.InstanceID, req.GetName())}
	d.usedPools.remember(src.Cluster, pool, creds)
	return snapPlan{name: req.GetName(), sourceID: req.GetSourceVolumeId(), source: src, target: target, who: who, creds: creds, params: p}, poolID, nil
}

// ensureSnapshot makes the snapshot image, or finishes what an earlier
// attempt started. Every step is idempotent and ordered so that a crash
// between any two leaves a state this function completes:
//
//  1. S@tmp       temporary snapshot of the source (kept if it exists)
//  2. clone I     of S@tmp, with the owner record (a clone without a record
//     of its own never completed: it is removed and made again)
//  3. I@csi-snap  the snapshot restores read from
//  4. rm S@tmp    moved to the snapshot trash namespace while I needs it
func (d *controllerService) ensureSnapshot(ctx context.Context, plan snapPlan, poolID int64) (*csi.Snapshot, error) {
	record, err := d.existingSnapshot(ctx, plan)
	if err != nil {
		return nil, err
	}
	if record == nil {
		if record, err = d.cloneForSnapshot(ctx, plan); err != nil {
			return nil, err
		}
	}
	failpoint.Crash("snapshot-after-clone")
	// The record's depth, when it has one within the bound, spares the walk
	// of the snapshot image's ancestors (see snapOwner.Depth).
	recorded := record.depthAtMost(d.maxCloneDepth())
	snap, err := d.opts.Backend.CreateSnap(ctx, plan.creds, plan.target, snapName, ceph.DepthWalk(!recorded))
	if err != nil {
		return nil, statusOf(err, "snapshot "+plan.target.String())
	}
	if recorded {
		snap.Depth = record.Depth
	}
	failpoint.Crash("snapshot-before-source-cleanup")
	if err := d.removeTempSnap(ctx, plan.creds, plan.source, plan.target.Name); err != nil {
		return nil, err
	}
	ready, err := d.withinBound(ctx, plan.creds, plan.target, snap.Depth)
	if err != nil {
		return nil, err
	}
	id, err := encodeSnapshotID(plan.target, poolID, plan.who.record)
	if err != nil {
		return nil, invalid("%v", err)
	}
	return csiSnapshot(id, record, snap.Size, ready), nil
}

// existingSnapshot inspects the snapshot image an earlier attempt may have
// made. It returns its owner record, or nil when there is none to adopt:
// nothing there (opening a missing image fails on its first read, so the
// fresh path pays one round trip here), or a clone cut short, which it
// removes.
func (d *controllerService) existingSnapshot(ctx context.Context, plan snapPlan) (*snapOwner, error) {
	info, err := d.opts.Backend.StatImage(ctx, plan.creds, plan.target)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, statusOf(err, "inspect snapshot image "+plan.target.String())
	}
	raw := info.Metadata[metaOwner]
	var record snapOwner
	sameRequest := json.Unmarshal([]byte(raw), &record) == nil && record.Kind == kindSnapshot && record.Name == plan.name
	if unfinishedClone(info, sameRequest, plan.source) {
		return nil, d.removePartial(ctx, plan.creds, plan.target)
	}
	if !sameRequest {
		return nil, status.Errorf(codes.AlreadyExists, "snapshot image %s belongs to another request (owner record %q)", plan.target, raw)
	}
	if record.Source != plan.sourceID {
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %q exists with source volume %q, not %q", plan.name, record.Source, plan.sourceID)
	}
	return &record, nil
}

// cloneForSnapshot takes the temporary snapshot of the source and clones
// the snapshot image from it, with its owner record.
func (d *controllerService) cloneForSnapshot(ctx context.Context, plan snapPlan) (*snapOwner, error) {
	tmp := params.TempSnapName(plan.target.Name)
	taken, err := d.opts.Backend.CreateSnap(ctx, plan.creds, plan.source, tmp, ceph.MeasureDepth)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "source volume %q does not exist (image %s)", plan.sourceID, plan.source)
	}
	if err != nil {
		return nil, statusOf(err, "snapshot source volume "+plan.source.String())
	}
	failpoint.Crash("snapshot-after-source-snap")
	record := &snapOwner{
		Kind: kindSnapshot, Name: plan.name, Instance: d.opts.InstanceID, Source: plan.sourceID, User: plan.who.record,
		Created: taken.Created.UTC().Format(time.RFC3339Nano),
		Size:    taken.Size, Depth: taken.Depth + 1,
		SnapshotName: plan.params.Claim.Name, SnapshotNamespace: plan.params.Claim.Namespace, ContentName: plan.params.Claim.ContentName,
	}
	raw, err := json.Marshal(record)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode owner record: %v", err)
	}
	// deep-flatten lets a flatten (clone depth bound) detach I@csi-snap too,
	// not only I's head; snapshot images are never mapped, so no kernel
	// needs to support it.
	spec := ceph.CloneSpec{Features: ceph.FeatureLayering | ceph.FeatureDeepFlatten, Metadata: map[string]string{metaOwner: string(raw)}}
	err = d.cloneOverPartial(ctx, plan.creds, plan.source, tmp, plan.target, spec)
	if err != nil {
		d.abandonTempSnap(ctx, plan.creds, plan.source, plan.target.Name, err)
	}
	if errors.Is(err, ceph.ErrNoSpace) {
		return nil, status.Errorf(codes.ResourceExhausted, "clone snapshot image %s: pool %q is full or over quota: %v", plan.target, plan.target.Pool, err)
	}
	if err != nil {
		return nil, statusOf(err, "clone snapshot image "+plan.target.String())
	}
	return record, nil
}

func csiSnapshot(id string, record *snapOwner, size uint64, ready bool) *csi.Snapshot {
	s := &csi.Snapshot{SnapshotId: id, SourceVolumeId: record.Source, SizeBytes: int64(size), ReadyToUse: ready}
	if t, err := time.Parse(time.RFC3339Nano, record.Created); err == nil {
		s.CreationTime = timestamppb.New(t)
	}
	return s
}

// DeleteSnapshot implements csi.ControllerServer. The snapshot's RBD
// snapshot is removed (clone v2 keeps it in the snapshot trash namespace
// while restored volumes read through it) and the image goes to the trash,
// purged once nothing reads through it any more.
func (d *controllerService) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (_ *csi.DeleteSnapshotResponse, err error) {
	if req.GetSnapshotId() == "" {
		return nil, invalid("snapshot_id is required")
	}
	id, image, ok := decodeSnapshotID(req.GetSnapshotId())
	if !ok {
		klog.InfoS("DeleteSnapshot of a foreign snapshot ID: nothing to do", "snapshot", req.GetSnapshotId())
		return &csi.DeleteSnapshotResponse{}, nil
	}
	who, err := resolveIdentity(req.GetSecrets(), "snapshotter secrets", idHint(id))
	if err != nil {
		return nil, err
	}
	defer explainAuth(&err, &who)
	creds := who.creds
	unlock, err := d.locks.Lock(ctx, "snapshot-id/"+req.GetSnapshotId())
	if err != nil {
		return nil, lockStatus(err, "snapshot "+req.GetSnapshotId())
	}
	defer unlock()
	ref, err := d.imageRef(ctx, id, creds)
	if errors.Is(err, errPoolGone) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	ref.Name = image
	d.usedPools.remember(ref.Cluster, ref.Pool, creds)
	err = d.opts.Backend.RemoveSnap(ctx, creds, ref, snapName)
	if err != nil && !errors.Is(err, ceph.ErrNotFound) {
		return nil, statusOf(err, "remove snapshot "+ref.String()+"@"+snapName)
	}
	failpoint.Crash("delete-snapshot-before-trash")
	if err := d.trashAndPurge(ctx, creds, ref); err != nil {
		return nil, err
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// decodeSnapshotID accepts only IDs this driver hands out for snapshots:
// image@csi-snap with a snapshot image name, so that no ID can make
// DeleteSnapshot touch a volume.
func decodeSnapshotID(s string) (volid.ID, string, bool) {
	id, err := volid.Decode(s)
	if err != nil {
		return volid.ID{}, "", false
	}
	image, snap, ok := id.SplitSnapshot()
	if !ok || snap != snapName || !params.IsSnapshotImage(image) {
		return volid.ID{}, "", false
	}
	return id, image, true
}

// GetSnapshot implements csi.ControllerServer.
func (d *controllerService) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, invalid("snapshot_id is required")
	}
	snap, err := d.lookupSnapshot(ctx, req.GetSnapshotId(), req.GetSecrets())
	if err != nil {
		return nil, err
	}
	if snap == nil {
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist", req.GetSnapshotId())
	}
	return &csi.GetSnapshotResponse{Snapshot: snap}, nil
}

// lookupSnapshot reads one snapshot by ID; nil, nil when there is none.
func (d *controllerService) lookupSnapshot(ctx context.Context, snapshotID string, secrets map[string]string) (*csi.Snapshot, error) {
	id, image, ok := decodeSnapshotID(snapshotID)
	if !ok {
		return nil, nil
	}
	cl, err := d.clusterForID(id)
	if err != nil {
		return nil, err
	}
	creds, err := d.snapshotCreds(secrets, cl, idHint(id))
	if err != nil {
		return nil, err
	}
	ref, err := d.imageRef(ctx, id, creds)
	if errors.Is(err, errPoolGone) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ref.Name = image
	snap, _, err := d.statSnapshot(ctx, creds, ref)
	if snap != nil {
		snap.SnapshotId = snapshotID
	}
	return snap, err
}

// statSnapshot builds the CSI view of a snapshot image, without its ID, and
// returns its owner record; nil, nil, nil when it is gone or is no complete
// snapshot.
func (d *controllerService) statSnapshot(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) (*csi.Snapshot, *snapOwner, error) {
	snap, err := d.opts.Backend.StatSnap(ctx, creds, ref, snapName)
	if errors.Is(err, ceph.ErrNotFound) {
		// The image is gone, or CreateSnapshot has not finished (or
		// DeleteSnapshot has begun).
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, statusOf(err, "inspect snapshot "+ref.String()+"@"+snapName)
	}
	var record snapOwner
	if json.Unmarshal([]byte(snap.ImageMetadata[metaOwner]), &record) != nil || record.Kind != kindSnapshot {
		return nil, nil, nil
	}
	ready, err := d.withinBound(ctx, creds, ref, snap.Depth)
	if err != nil {
		return nil, nil, err
	}
	return csiSnapshot("", &record, snap.Size, ready), &record, nil
}

// snapshotCreds picks the request's secrets (a key-only Secret being for
// the hinted user), else those the controller knows for the pool
// (ListSnapshots and GetSnapshot may carry none).
func (d *controllerService) snapshotCreds(secrets map[string]string, cl ceph.Cluster, hint userHint) (ceph.Credentials, error) {
	if len(secrets) > 0 {
		who, err := resolveIdentity(secrets, "snapshotter secrets", hint)
		return who.creds, err
	}
	for _, a := range d.usedPools.list() {
		if a.cluster.Key() == cl.Key() {
			return a.creds, nil
		}
	}
	return d.credsFor(cl, "")
}
