package driver

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/attach"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// FenceExpiry is how long a fenced client stays blocklisted. The entry
// names one client instance (address and nonce), which never comes back
// once blocklisted: a node that returns maps with new clients, so a long
// expiry costs nothing and covers a node that stays powered off for days.
const FenceExpiry = 7 * 24 * time.Hour

// ControllerPublishVolume implements csi.ControllerServer: it claims the
// volume for the node in the image's attachment record (package attach),
// atomically in Ceph, so that no two nodes ever hold a single-node volume.
func (d *controllerService) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (_ *csi.ControllerPublishVolumeResponse, err error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if req.GetNodeId() == "" {
		return nil, invalid("node_id is required")
	}
	if req.GetVolumeCapability() == nil {
		return nil, invalid("volume_capability is required")
	}
	if _, err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if err := attach.ValidateNodeID(req.GetNodeId()); err != nil {
		return nil, statusOf(err, "")
	}
	if staticVolume(req.GetVolumeId(), req.GetVolumeContext()) {
		// ControllerUnpublishVolume gets no volume context and could never
		// find such a claim again: these attach as before, guarded by the
		// node's watcher check only (docs/operations.md "Single writer across nodes").
		klog.V(2).InfoS("Attaching a static volume without an attachment record", "volume", req.GetVolumeId(), "node", req.GetNodeId())
		return &csi.ControllerPublishVolumeResponse{}, nil
	}
	var who identity
	defer explainAuth(&err, &who)
	ref, unlock, err := d.lockedAttachVolume(ctx, req.GetVolumeId(), req.GetSecrets(), &who)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := d.opts.Backend.ReadHeader(ctx, who.creds, ref); err != nil {
		return nil, statusOf(err, "volume "+req.GetVolumeId())
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode()
	// ReadOnly comes from the access mode alone: the node stages a writer
	// mode read-write whatever the readonly flag (only the publish bind
	// mount honours it), so such a node can write and must be fenced.
	want := attach.Claim{Mode: mode.String(), Shared: sharedMode(mode), ReadOnly: readOnlyMode(mode), Since: time.Now().UTC()}
	var got attach.Claim
	store := attach.Store{Backend: d.opts.Backend, Creds: who.creds}
	_, err = store.Update(ctx, ref, func(r attach.Record) (attach.Record, bool, error) {
		next, c, changed, err := r.Add(req.GetNodeId(), want)
		got = c
		return next, changed, err
	})
	if err != nil {
		return nil, statusOf(err, "attach volume "+req.GetVolumeId()+" to node "+req.GetNodeId())
	}
	failpoint.Crash("publish-before-reply")
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{
		attach.ContextNode:       req.GetNodeId(),
		attach.ContextGeneration: strconv.FormatUint(got.Generation, 10),
	}}, nil
}

// staticVolume reports whether the volume is a static PersistentVolume
// whose handle is no volume ID of this driver: its volume context names
// the image.
func staticVolume(volumeID string, vc map[string]string) bool {
	if _, err := volid.Decode(volumeID); err == nil {
		return false
	}
	return vc["imageName"] != "" && vc["pool"] != ""
}

// sharedMode reports whether the access mode lets several nodes hold the
// volume at once.
func sharedMode(m csi.VolumeCapability_AccessMode_Mode) bool {
	switch m {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return true
	}
	return false
}

// ControllerUnpublishVolume implements csi.ControllerServer: it releases
// the node's claim, first fencing the node when it still has the image
// open for writing (it is lost: see fenceHolder).
func (d *controllerService) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (_ *csi.ControllerUnpublishVolumeResponse, err error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if _, err := volid.Decode(req.GetVolumeId()); err != nil {
		// Not an ID this driver produced: it was never published.
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	var who identity
	defer explainAuth(&err, &who)
	ref, unlock, err := d.lockedAttachVolume(ctx, req.GetVolumeId(), req.GetSecrets(), &who)
	if status.Code(err) == codes.NotFound {
		return &csi.ControllerUnpublishVolumeResponse{}, nil // its pool is gone
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	store := attach.Store{Backend: d.opts.Backend, Creds: who.creds}
	rec, _, err := store.Load(ctx, ref)
	if err != nil {
		return nil, statusOf(err, "read attachments of volume "+req.GetVolumeId())
	}
	nodes := []string{req.GetNodeId()}
	if req.GetNodeId() == "" {
		nodes = rec.Nodes() // the spec: unset means every node
	}
	for _, node := range nodes {
		if err := d.release(ctx, store, ref, rec, node); err != nil {
			return nil, err
		}
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// release fences node if it must, then drops its claim.
func (d *controllerService) release(ctx context.Context, store attach.Store, ref ceph.ImageRef, rec attach.Record, node string) error {
	c, ok := rec.Claims[node]
	if !ok {
		return nil
	}
	if !c.Shared && !c.ReadOnly {
		if err := d.fenceHolder(ctx, store.Creds, ref, node); err != nil {
			return err
		}
	}
	failpoint.Crash("unpublish-after-fence")
	_, err := store.Update(ctx, ref, func(r attach.Record) (attach.Record, bool, error) {
		next, changed := r.Remove(node)
		return next, changed, nil
	})
	if err != nil {
		return statusOf(err, "detach volume image "+ref.String()+" from node "+node)
	}
	return nil
}

// fenceHolder blocklists the clients that still have the image open when
// the CO detaches it from its only writer. The CO detaches after the node
// unstaged (no client left) unless the node is lost: Kubernetes' non-
// graceful shutdown (the node.kubernetes.io/out-of-service taint) or its
// force detach after maxWaitForUnmountDuration. The claim excluded every
// other node, so those clients are the lost node's, and without the
// blocklist its cached writes could land after another node mounted the
// volume. Blocklisting comes first: a crash before the claim goes leaves
// it held, and the retry fences again (idempotent).
func (d *controllerService) fenceHolder(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef, node string) error {
	ws, err := d.opts.Backend.Watchers(ctx, creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return nil
	}
	if err != nil {
		return statusOf(err, "list clients of "+ref.String()+" before detaching it from node "+node)
	}
	for _, w := range ws {
		if err := d.opts.Backend.Blocklist(ctx, creds, ref.Cluster, w.Addr, FenceExpiry); err != nil {
			return statusOf(err, "fence client "+w.Addr+" of node "+node+" that still has "+ref.String()+" open")
		}
		klog.InfoS("Fenced a client of a node the volume is detached from while it still had the image open: its writes can no longer reach the cluster",
			"node", node, "image", ref, "client", w.Client, "addr", w.Addr, "expiry", FenceExpiry)
	}
	return nil
}

// lockedAttachVolume is lockedVolume for publish and unpublish, whose
// requests carry secrets only when the StorageClass names a
// controller-publish Secret: without, the Secret mounted for the volume's
// cluster under --secrets-dir serves, so volumes made before the driver
// had attach records attach too.
func (d *controllerService) lockedAttachVolume(ctx context.Context, volumeID string, secrets map[string]string, who *identity) (ceph.ImageRef, func(), error) {
	if len(secrets) > 0 {
		return d.lockedVolume(ctx, volumeID, secrets, who)
	}
	id, err := decodeVolumeID(volumeID)
	if err != nil {
		return ceph.ImageRef{}, nil, err
	}
	cl, err := d.clusterForID(id)
	if err != nil {
		return ceph.ImageRef{}, nil, err
	}
	cr, err := dirCredentials(d.opts.SecretsDir, cl.ID)
	if errors.Is(err, errNoDirSecret) {
		return ceph.ImageRef{}, nil, status.Errorf(codes.FailedPrecondition, "volume %q: the request carries no secrets and no --secrets-dir Secret serves its cluster: set csi.storage.k8s.io/controller-publish-secret-name and -namespace in the StorageClass, or mount a Secret for cluster %q under --secrets-dir (chart: controller.listingCredentials), which also serves volumes made before", volumeID, cl.ID)
	}
	if err != nil {
		return ceph.ImageRef{}, nil, status.Errorf(codes.FailedPrecondition, "volume %q carries no secrets: %v", volumeID, err)
	}
	who.creds = cr
	return d.lockedRef(ctx, volumeID, id, cr)
}
