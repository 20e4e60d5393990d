package driver

// The flow of CreateVolume from a snapshot (restore) or a volume (clone),
// top-down: ensureClone, its steps in order, then the crash-recovery cases.
// CreateSnapshot (snapshot.go) reuses the clone steps.

import (
	"context"
	"encoding/json"
	"errors"
	"maps"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// cloneSource is what a new volume is cloned from: a snapshot image's
// snapshot (restore), or a temporary snapshot of a volume (clone).
type cloneSource struct {
	id     string        // the CSI snapshot or volume ID, kept in the owner record
	parent ceph.ImageRef // image cloned from
	snap   string        // its snapshot cloned from
	size   uint64
	depth  int               // ancestors of parent at snap: the clone has one more
	volume bool              // a volume: snap is temporary and must go once cloned
	meta   map[string]string // the parent image's metadata (its wrapped key)
}

// cloneOwner is the owner record of a volume made from a content source:
// the volume record plus the source, which tells a retry with another
// source (AlreadyExists) from a retry of this one.
type cloneOwner struct {
	owner
	Kind   string `json:"kind,omitempty"` // "" for volumes; "snapshot" in an inherited snapshot record
	Source string `json:"source"`
}

// ensureClone is CreateVolume with a content source. Its steps, each
// idempotent, in the order that lets a retry finish after a crash anywhere:
//
//  1. S@tmp   (clones of volumes) temporary snapshot of the source volume
//  2. clone   the volume, with its owner record
//  3. rm tmp  (clones of volumes) moved to the snapshot trash namespace
//  4. resize  to the requested size, when larger than the source
//  5. depth   over the bound: flatten, and answer Aborted until it is done
//
// Crash recovery has two branches of its own: an earlier attempt's clone
// under the name (adopted, or removed when it never got its owner record),
// and a source that is gone (cloneOfGoneSource).
func (d *controllerService) ensureClone(ctx context.Context, name string, plan createPlan, cs *csi.VolumeContentSource) (uint64, error) {
	src, err := d.resolveCloneSource(ctx, plan, cs)
	if status.Code(err) == codes.NotFound {
		return d.cloneOfGoneSource(ctx, name, plan, cs, err)
	}
	if err != nil {
		return 0, err
	}
	size, err := cloneSize(plan, src.size)
	if err != nil {
		return 0, err
	}
	earlier, err := d.existingClone(ctx, name, plan, src)
	if err != nil {
		return 0, err
	}
	if earlier != nil {
		// Its depth is measured again: it may have been flattened since.
		return d.finishClone(ctx, plan, src, earlier, size, -1)
	}
	keys, err := cloneKeyMetadata(ctx, plan, src)
	if err != nil {
		return 0, err
	}
	if err := d.makeClone(ctx, name, plan, src, keys); err != nil {
		return 0, err
	}
	return d.finishClone(ctx, plan, src, &ceph.ImageInfo{Size: src.size}, size, src.depth+1)
}

// finishClone runs steps 3 to 5 on a clone of cur.Size bytes: depth < 0
// means unknown, cur is then inspected for it.
func (d *controllerService) finishClone(ctx context.Context, plan createPlan, src cloneSource, cur *ceph.ImageInfo, size uint64, depth int) (uint64, error) {
	// Removed before anything else can fail, so that a request the CO
	// gives up on leaves no snapshot on the source (it would keep the
	// source's purge waiting).
	if src.volume {
		if err := d.removeTempSnap(ctx, plan.creds, src.parent, plan.ref.Name); err != nil {
			return 0, err
		}
	}
	failpoint.Crash("clone-before-resize")
	grown, err := d.growClone(ctx, plan, cur.Size, size)
	if err != nil {
		return 0, err
	}
	return grown, d.cloneReady(ctx, plan, cur, depth)
}

// resolveCloneSource checks the content source and returns what to clone.
// A source that does not exist is NotFound, as the CSI spec asks.
func (d *controllerService) resolveCloneSource(ctx context.Context, plan createPlan, cs *csi.VolumeContentSource) (cloneSource, error) {
	switch {
	case cs.GetSnapshot() != nil:
		return d.snapshotSource(ctx, plan, cs.GetSnapshot().GetSnapshotId())
	case cs.GetVolume() != nil:
		return d.volumeSource(ctx, plan, cs.GetVolume().GetVolumeId())
	}
	return cloneSource{}, invalid("volume_content_source needs a snapshot or a volume")
}

func (d *controllerService) snapshotSource(ctx context.Context, plan createPlan, snapshotID string) (cloneSource, error) {
	id, image, ok := decodeSnapshotID(snapshotID)
	if !ok {
		return cloneSource{}, status.Errorf(codes.NotFound, "snapshot %q does not exist: not a snapshot ID of this driver", snapshotID)
	}
	ref, err := d.sourceRef(ctx, plan, id, "snapshot", snapshotID)
	if err != nil {
		return cloneSource{}, err
	}
	ref.Name = image
	if src, ok, err := d.recordedSnapshotSource(ctx, plan, ref, snapshotID); ok || err != nil {
		return src, err
	}
	snap, err := d.opts.Backend.StatSnap(ctx, plan.creds, ref, snapName)
	if errors.Is(err, ceph.ErrNotFound) {
		return cloneSource{}, status.Errorf(codes.NotFound, "snapshot %q does not exist", snapshotID)
	}
	if err != nil {
		return cloneSource{}, statusOf(err, "inspect snapshot "+ref.String()+"@"+snapName)
	}
	ready, err := d.withinBound(ctx, plan.creds, ref, snap.Depth)
	if err != nil {
		return cloneSource{}, err
	}
	if !ready {
		return cloneSource{}, status.Errorf(codes.Aborted, "snapshot %q is not ready: its image %s is being flattened; retry later", snapshotID, ref)
	}
	return cloneSource{id: snapshotID, parent: ref, snap: snapName, size: snap.Size, depth: snap.Depth, meta: snap.ImageMetadata}, nil
}

// recordedSnapshotSource resolves a snapshot from its image's owner record
// alone (two reads, against the dozens an open and a walk of the image's
// ancestors cost), when the record holds the snapshot's size and a depth
// whose clone stays within the bound. ok is false when the image must be
// inspected instead: an older record, or a chain near the bound, whose
// actual depth may be shorter by now. The RBD snapshot itself is not looked
// at: the clone fails with NotFound when it is gone.
func (d *controllerService) recordedSnapshotSource(ctx context.Context, plan createPlan, ref ceph.ImageRef, snapshotID string) (cloneSource, bool, error) {
	h, err := d.opts.Backend.ReadHeader(ctx, plan.creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return cloneSource{}, false, status.Errorf(codes.NotFound, "snapshot %q does not exist", snapshotID)
	}
	if err != nil {
		return cloneSource{}, false, statusOf(err, "read the owner record of snapshot image "+ref.String())
	}
	md := h.Metadata
	var record snapOwner
	if json.Unmarshal([]byte(md[metaOwner]), &record) != nil || record.Kind != kindSnapshot {
		return cloneSource{}, false, nil
	}
	// The clone has one ancestor more than the snapshot image.
	if record.Size == 0 || !record.depthAtMost(d.maxCloneDepth()-1) {
		return cloneSource{}, false, nil
	}
	return cloneSource{id: snapshotID, parent: ref, snap: snapName, size: record.Size, depth: record.Depth, meta: md}, true, nil
}

func (d *controllerService) volumeSource(ctx context.Context, plan createPlan, volumeID string) (cloneSource, error) {
	id, err := volid.Decode(volumeID)
	if err != nil || id.IsSnapshot() {
		return cloneSource{}, status.Errorf(codes.NotFound, "source volume %q does not exist: not a volume ID of this driver", volumeID)
	}
	ref, err := d.sourceRef(ctx, plan, id, "source volume", volumeID)
	if err != nil {
		return cloneSource{}, err
	}
	info, err := d.opts.Backend.StatImage(ctx, plan.creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return cloneSource{}, status.Errorf(codes.NotFound, "source volume %q does not exist", volumeID)
	}
	if err != nil {
		return cloneSource{}, statusOf(err, "inspect source volume "+ref.String())
	}
	depth := 0
	if info.Parent != nil {
		if depth, err = d.opts.Backend.CloneDepth(ctx, plan.creds, ref); err != nil {
			return cloneSource{}, statusOf(err, "measure clone depth of "+ref.String())
		}
	}
	return cloneSource{id: volumeID, parent: ref, snap: params.TempSnapName(plan.ref.Name), size: info.Size, depth: depth, volume: true, meta: info.Metadata}, nil
}

// cloneKeyMetadata is the wrapped key of a volume made from src: the
// source's DEK (the clone shares its encrypted blocks), wrapped again for
// the new image. A plain source into an encrypted StorageClass, or the
// reverse, is InvalidArgument: LUKS cannot be added or removed by cloning.
func cloneKeyMetadata(ctx context.Context, plan createPlan, src cloneSource) (map[string]string, error) {
	_, srcEncrypted := src.meta[kms.MetaDEK]
	if srcEncrypted != plan.params.Encryption.Enabled {
		return nil, invalid("content source %q has %s=%v and the StorageClass %v: restore or clone an encrypted volume into an encrypted StorageClass and a plain one into a plain one", src.id, params.KeyEncrypted, srcEncrypted, plan.params.Encryption.Enabled)
	}
	if !srcEncrypted {
		return nil, nil
	}
	// The image the key must be bound to comes from the source, never from
	// the wrap: Unwrapped refuses a wrap copied from another volume.
	want, err := wrapImage(src)
	if err != nil {
		return nil, err
	}
	dek, err := kms.Unwrapped(ctx, plan.kms, src.meta, want)
	if err != nil {
		return nil, statusOf(err, "unwrap the volume key of content source "+src.parent.String()+" with the KEK of the provisioner secrets")
	}
	return wrapMetadata(ctx, plan, dek)
}

// wrapImage is the image a content source's wrapped key must be bound to:
// a volume's own image; for a snapshot image, which carries the wrap of
// the volume it was taken of (clone copies image-meta), that volume's image,
// named by the snapshot's owner record. Deriving it from the source, never
// from the wrap itself, is what refuses a wrap copied between volumes.
func wrapImage(src cloneSource) (string, error) {
	if src.volume {
		return src.parent.Name, nil
	}
	var record snapOwner
	if json.Unmarshal([]byte(src.meta[metaOwner]), &record) != nil || record.Kind != kindSnapshot {
		return "", status.Errorf(codes.FailedPrecondition, "content source %q: snapshot image %s has an encrypted volume key but no readable %s record naming the volume it was taken of, so the key cannot be checked; restore from another snapshot", src.id, src.parent, metaOwner)
	}
	id, err := volid.Decode(record.Source)
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "content source %q: snapshot image %s records source volume %q, which is no volume ID: %v", src.id, src.parent, record.Source, err)
	}
	return id.Image, nil
}

// sourceRef resolves a source ID, which must be in the new volume's cluster:
// RBD clones do not cross clusters.
func (d *controllerService) sourceRef(ctx context.Context, plan createPlan, id volid.ID, what, raw string) (ceph.ImageRef, error) {
	cl, err := d.clusterForID(id)
	if err != nil {
		return ceph.ImageRef{}, err
	}
	if cl.Key() != plan.ref.Cluster.Key() {
		return ceph.ImageRef{}, invalid("%s %q is in another Ceph cluster than the StorageClass names: clones stay in their cluster", what, raw)
	}
	ref, err := d.imageRef(ctx, id, plan.creds)
	if errors.Is(err, errPoolGone) {
		return ceph.ImageRef{}, status.Errorf(codes.NotFound, "%s %q: its pool no longer exists", what, raw)
	}
	return ref, err
}

// cloneSize is the size to give the clone: the source's when the request
// gives none, never less than the source's (RBD cannot shrink a clone below
// its parent's data without losing it).
func cloneSize(plan createPlan, source uint64) (uint64, error) {
	if !plan.sizeGiven {
		if plan.limit > 0 && source > plan.limit {
			return 0, status.Errorf(codes.OutOfRange, "the source is %d bytes, above limit_bytes %d", source, plan.limit)
		}
		return source, nil
	}
	if plan.size < source {
		if plan.limit == 0 || source <= plan.limit {
			return source, nil
		}
		return 0, status.Errorf(codes.OutOfRange, "required_bytes %d is smaller than the source's %d bytes: a volume made from a source is at least as large", plan.size, source)
	}
	return plan.size, nil
}

// makeClone takes the temporary snapshot (volume sources) and clones.
func (d *controllerService) makeClone(ctx context.Context, name string, plan createPlan, src cloneSource, keys map[string]string) error {
	if src.volume {
		if _, err := d.opts.Backend.CreateSnap(ctx, plan.creds, src.parent, src.snap, ceph.SkipDepth); err != nil {
			return statusOf(err, "snapshot source volume "+src.parent.String())
		}
		failpoint.Crash("clone-after-source-snap")
	}
	raw, err := json.Marshal(cloneOwner{owner: owner{
		Name: name, Instance: d.opts.InstanceID, User: plan.who.record,
		PVCName: plan.params.Claim.PVCName, PVCNamespace: plan.params.Claim.PVCNamespace, PVName: plan.params.Claim.PVName,
	}, Source: src.id})
	if err != nil {
		return status.Errorf(codes.Internal, "encode owner record: %v", err)
	}
	spec := ceph.CloneSpec{Features: plan.params.Features, DataPool: plan.params.DataPool, Metadata: map[string]string{metaOwner: string(raw)}}
	maps.Copy(spec.Metadata, keys)
	err = d.cloneOverPartial(ctx, plan.creds, src.parent, src.snap, plan.ref, spec)
	if err != nil {
		if src.volume {
			d.abandonTempSnap(ctx, plan.creds, src.parent, plan.ref.Name, err)
		}
		if errors.Is(err, ceph.ErrNotFound) {
			// The pools were checked: it is the source that went away.
			return status.Errorf(codes.NotFound, "content source %q no longer exists: %v", src.id, err)
		}
		return createStatus(err, plan)
	}
	return nil
}

// cloneOverPartial clones parent@snap to target. A name taken by pieces of
// a clone that cannot be opened (librbd was interrupted between writing the
// name and the header) is cleared and the clone made again.
func (d *controllerService) cloneOverPartial(ctx context.Context, creds ceph.Credentials, parent ceph.ImageRef, snap string, target ceph.ImageRef, spec ceph.CloneSpec) error {
	err := d.opts.Backend.CloneImage(ctx, creds, parent, snap, target, spec)
	if !errors.Is(err, ceph.ErrExists) {
		return err
	}
	// A Ceph error, like CloneImage's, for the caller to map.
	if err := d.opts.Backend.RemovePartialImage(ctx, creds, target); err != nil && !errors.Is(err, ceph.ErrNotFound) {
		return err
	}
	return d.opts.Backend.CloneImage(ctx, creds, parent, snap, target, spec)
}

// removeTempSnap removes the temporary snapshot a snapshot or clone took of
// its source; one already gone (or a source already deleted) is success.
func (d *controllerService) removeTempSnap(ctx context.Context, creds ceph.Credentials, source ceph.ImageRef, target string) error {
	err := d.opts.Backend.RemoveSnap(ctx, creds, source, params.TempSnapName(target))
	if err == nil || errors.Is(err, ceph.ErrNotFound) {
		return nil
	}
	return statusOf(err, "remove temporary snapshot of "+source.String())
}

// growClone grows the clone from cur to size bytes when it is smaller, and
// returns its size.
func (d *controllerService) growClone(ctx context.Context, plan createPlan, cur, size uint64) (uint64, error) {
	if cur >= size {
		return cur, nil
	}
	if err := d.opts.Backend.ResizeImage(ctx, plan.creds, plan.ref, size); err != nil {
		return 0, statusOf(err, "grow clone "+plan.ref.String())
	}
	return size, nil
}

// cloneReady answers Aborted while the new volume is flattened: the
// provisioner retries Aborted (an operation on the volume is in progress,
// in the CSI spec's words) and keeps the volume's creation pending, so the
// claim binds once the chain is short again. ResourceExhausted would read
// as "out of capacity" and Unavailable as "plugin unreachable". depth < 0
// means unknown: info (an existing image) is inspected.
func (d *controllerService) cloneReady(ctx context.Context, plan createPlan, info *ceph.ImageInfo, depth int) error {
	var ready bool
	var err error
	if depth < 0 {
		ready, err = d.settleDepth(ctx, plan.creds, plan.ref, info)
	} else {
		ready, err = d.withinBound(ctx, plan.creds, plan.ref, depth)
	}
	if err != nil {
		return err
	}
	if !ready {
		return status.Errorf(codes.Aborted, "volume image %s is being flattened because its clone chain is deeper than %d; retry later (progress: ceph rbd task list)", plan.ref, d.maxCloneDepth())
	}
	return nil
}

// Crash recovery: what an earlier attempt left under the name.

// existingClone inspects what an earlier attempt left under the volume's
// name: nil when there is nothing to adopt.
func (d *controllerService) existingClone(ctx context.Context, name string, plan createPlan, src cloneSource) (*ceph.ImageInfo, error) {
	info, err := d.opts.Backend.StatImage(ctx, plan.creds, plan.ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, statusOf(err, "inspect existing image "+plan.ref.String())
	}
	record, sameRequest := cloneOwnerOf(info, name)
	if unfinishedClone(info, sameRequest, src.parent) {
		return nil, d.removePartial(ctx, plan.creds, plan.ref)
	}
	if err := matchesClone(info, record, sameRequest, name, plan, src.id); err != nil {
		return nil, err
	}
	return &info, nil
}

// cloneOwnerOf reads an image's owner record; sameRequest says it is the volume
// record of request name.
func cloneOwnerOf(info ceph.ImageInfo, name string) (record cloneOwner, sameRequest bool) {
	err := json.Unmarshal([]byte(info.Metadata[metaOwner]), &record)
	return record, err == nil && record.Kind == "" && record.Name == name
}

// unfinishedClone reports whether an image under a name this driver derives
// is a clone that librbd made but the driver never finished: it has no
// owner record of its own yet. librbd copies the parent's image-meta into a
// clone, so a record naming someone else, on an image whose parent is the
// very image the driver clones from, is the parent's record. (The parent
// snapshot is not compared: a temporary one may already have moved to the
// snapshot trash namespace under another name.)
func unfinishedClone(info ceph.ImageInfo, sameRequest bool, parent ceph.ImageRef) bool {
	if sameRequest {
		return false
	}
	if _, ok := info.Metadata[metaOwner]; !ok {
		return true
	}
	p := info.Parent
	return p != nil && p.Pool == parent.Pool && p.Image == parent.Name
}

// matchesClone decides whether an existing clone satisfies a repeated
// request for a volume from source.
func matchesClone(info ceph.ImageInfo, record cloneOwner, sameRequest bool, name string, plan createPlan, source string) error {
	if sameRequest && record.Source != source {
		return status.Errorf(codes.AlreadyExists, "volume %q exists with another content source (%q), not %q", name, record.Source, source)
	}
	check := plan
	check.size = 0 // a clone smaller than asked is grown by the caller
	if info.Features&ceph.FeatureLayering != 0 {
		check.params.Features |= ceph.FeatureLayering // every clone has it (CloneImage)
	}
	return compatible(info, name, check)
}

// removePartial removes what an interrupted clone left under ref's name:
// the CO never got an ID for it, so nobody can be using it. The backend
// leaves pieces younger than its grace alone (Aborted here): they may be a
// clone still running in another controller or in a call of this one
// abandoned at its deadline.
func (d *controllerService) removePartial(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) error {
	err := d.opts.Backend.RemovePartialImage(ctx, creds, ref)
	if err == nil {
		klog.InfoS("Removed an image whose clone never completed", "image", ref)
		return nil
	}
	if errors.Is(err, ceph.ErrNotFound) {
		return nil
	}
	return statusOf(err, "remove unfinished clone "+ref.String())
}

// abandonTempSnap removes the temporary snapshot of a source after a clone
// from it failed, so that a snapshot or clone the CO gives up on leaves no
// snapshot behind on the volume (which would keep its trash purge from ever
// succeeding). Best effort, with its own bound: the RPC's deadline may be
// what failed; a retry takes the snapshot again. Not when the clone failed
// because another attempt is still making it (ErrInProgress): that one
// clones from the snapshot.
func (d *controllerService) abandonTempSnap(ctx context.Context, creds ceph.Credentials, source ceph.ImageRef, target string, cause error) {
	if errors.Is(cause, ceph.ErrInProgress) {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scheduleTimeout)
	defer cancel()
	if err := d.removeTempSnap(cctx, creds, source, target); err != nil {
		klog.InfoS("Could not remove the temporary snapshot of a failed clone; the next attempt will", "image", source, "error", err)
	}
}

// cloneOfGoneSource answers a CreateVolume whose content source no longer
// exists. The source may have been deleted after this very request made
// the volume (the CO retries when the answer was lost): that volume is
// returned, as the spec asks of a repeated request. What a crashed attempt
// left unfinished is removed, since no retry can finish it now and nobody
// else will ask for the name; then the source is NotFound.
func (d *controllerService) cloneOfGoneSource(ctx context.Context, name string, plan createPlan, cs *csi.VolumeContentSource, gone error) (uint64, error) {
	info, err := d.opts.Backend.StatImage(ctx, plan.creds, plan.ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return 0, gone
	}
	if err != nil {
		return 0, statusOf(err, "inspect existing image "+plan.ref.String())
	}
	record, sameRequest := cloneOwnerOf(info, name)
	if !sameRequest {
		// No record, or the one librbd copied from the parent: derived
		// names are the request's own, so no other volume has this one.
		if err := d.removePartial(ctx, plan.creds, plan.ref); err != nil {
			return 0, err
		}
		return 0, gone
	}
	if err := matchesClone(info, record, sameRequest, name, plan, sourceID(cs)); err != nil {
		return 0, err
	}
	want := info.Size
	if plan.sizeGiven {
		want = plan.size
	}
	size, err := d.growClone(ctx, plan, info.Size, want)
	if err != nil {
		return 0, err
	}
	return size, d.cloneReady(ctx, plan, &info, -1)
}

// sourceID is the CSI ID of a content source.
func sourceID(cs *csi.VolumeContentSource) string {
	if cs.GetSnapshot() != nil {
		return cs.GetSnapshot().GetSnapshotId()
	}
	return cs.GetVolume().GetVolumeId()
}
