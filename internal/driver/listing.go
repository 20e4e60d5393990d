package driver

import (
	"context"
	"encoding/json"
	"errors"

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

func (d *controllerService) totalCapacity(ctx context.Context) (*csi.GetCapacityResponse, error) {
	var total uint64
	for _, a := range d.usedPools.list() {
		u, err := d.opts.Backend.PoolUsage(ctx, a.creds, a.cluster, a.pool)
		if err != nil {
			return nil, statusOf(err, "read capacity of pool "+a.pool)
		}
		total += u.Available()
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
	ids, err := d.allVolumeIDs(ctx)
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(ids, start, req.GetMaxEntries(), "volumes")
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, id := range page {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: &csi.Volume{VolumeId: id}})
	}
	return resp, nil
}

func (d *controllerService) allVolumeIDs(ctx context.Context) ([]string, error) {
	var ids []string
	for _, a := range d.usedPools.list() {
		names, err := d.opts.Backend.ListImages(ctx, a.creds, a.cluster, a.pool)
		if err != nil {
			return nil, statusOf(err, "list images of pool "+a.pool)
		}
		poolID, err := d.opts.Backend.PoolID(ctx, a.creds, a.cluster, a.pool)
		if err != nil {
			return nil, statusOf(err, "look up pool "+a.pool)
		}
		for _, n := range names {
			if !params.OwnedBy(n, d.opts.InstanceID) || params.IsSnapshotImage(n) {
				continue
			}
			ref := ceph.ImageRef{Cluster: a.cluster, Pool: a.pool, Name: n}
			user, err := d.recordedUser(ctx, a.creds, ref)
			if err != nil {
				return nil, err
			}
			id, err := encodeID(ref, poolID, user)
			if err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// recordedUser is the cephx user the volume's ID records, from its owner
// record: the name alone does not tell, and the ID listed must be the one
// CreateVolume answered. An image gone since the pool was listed, or one
// that cannot be opened yet (a create in progress), records none.
func (d *controllerService) recordedUser(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) (string, error) {
	info, err := d.opts.Backend.StatImage(ctx, creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", statusOf(err, "inspect "+ref.String())
	}
	var record owner
	if json.Unmarshal([]byte(info.Metadata[metaOwner]), &record) != nil {
		return "", nil
	}
	return record.User, nil
}
