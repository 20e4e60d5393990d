package driver

import (
	"context"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// ListSnapshots implements csi.ControllerServer. By snapshot ID it reads one
// image. Otherwise it lists the snapshot images of this installation (by
// name: the instance tag and the snapshot prefix) in the pools the
// controller knows, plus the source volume's pool when filtering by source,
// and reads each candidate's owner record: the cost grows with the number
// of snapshots in those pools. The token is a position, as for ListVolumes.
func (d *controllerService) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalid("max_entries must not be negative")
	}
	start, err := parseToken(req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	snaps, err := d.matchingSnapshots(ctx, req)
	if err != nil {
		return nil, err
	}
	page, next, err := paginate(snaps, start, req.GetMaxEntries(), "snapshots")
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, s := range page {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s})
	}
	return resp, nil
}

// paginate cuts the page that starts at position start out of items, at
// most max entries (0: all), and returns the token of the next page ("" at
// the end). A start past the end is Aborted, as the spec asks for a token
// the driver cannot continue from.
func paginate[T any](items []T, start int, max int32, what string) ([]T, string, error) {
	if start > len(items) {
		return nil, "", status.Errorf(codes.Aborted, "starting_token %d is past the end of the list (%d %s)", start, len(items), what)
	}
	end := len(items)
	if m := int(max); m > 0 && start+m < end {
		end = start + m
	}
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

func parseToken(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(tok)
	if err != nil || n < 0 {
		return 0, status.Errorf(codes.Aborted, "starting_token %q was not issued by this driver", tok)
	}
	return n, nil
}

func (d *controllerService) matchingSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) ([]*csi.Snapshot, error) {
	if req.GetSnapshotId() != "" {
		s, err := d.lookupSnapshot(ctx, req.GetSnapshotId(), req.GetSecrets())
		if err != nil || s == nil {
			return nil, err
		}
		if src := req.GetSourceVolumeId(); src != "" && s.GetSourceVolumeId() != src {
			return nil, nil
		}
		return []*csi.Snapshot{s}, nil
	}
	pools, err := d.snapshotPools(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*csi.Snapshot
	for _, a := range pools {
		found, err := d.snapshotsInPool(ctx, a, req.GetSourceVolumeId())
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// snapshotPools lists the pools to search: the known ones, and the source
// volume's pool when the request names a source.
func (d *controllerService) snapshotPools(ctx context.Context, req *csi.ListSnapshotsRequest) ([]poolAccess, error) {
	pools, err := d.listingPools(ctx)
	if err != nil {
		return nil, err
	}
	src := req.GetSourceVolumeId()
	if src == "" {
		return pools, nil
	}
	id, err := volid.Decode(src)
	if err != nil || id.IsSnapshot() {
		return nil, nil // not a volume of this driver: no snapshot has it as source
	}
	cl, err := d.clusterForID(id)
	if err != nil {
		return nil, err
	}
	creds, err := d.snapshotCreds(req.GetSecrets(), cl, idHint(id))
	if err != nil {
		return nil, err
	}
	ref, err := d.imageRef(ctx, id, creds)
	if err != nil {
		return pools, nil //nolint:nilerr // the source's pool is gone; its snapshots may live elsewhere
	}
	for _, a := range pools {
		if a.cluster.Key() == cl.Key() && a.pool == ref.Pool {
			return pools, nil
		}
	}
	return append(pools, poolAccess{cluster: cl, pool: ref.Pool, creds: creds}), nil
}

// snapshotsInPool reads this installation's snapshots in one pool, keeping
// those of the given source volume ("" = all).
func (d *controllerService) snapshotsInPool(ctx context.Context, a poolAccess, source string) ([]*csi.Snapshot, error) {
	names, err := d.opts.Backend.ListImages(ctx, a.creds, a.cluster, a.pool)
	if skippable(a, err) {
		return nil, nil
	}
	if err != nil {
		return nil, statusOf(err, "list images of pool "+a.pool)
	}
	poolID, err := d.opts.Backend.PoolID(ctx, a.creds, a.cluster, a.pool)
	if err != nil {
		return nil, statusOf(err, "look up pool "+a.pool)
	}
	var out []*csi.Snapshot
	for _, n := range names {
		if !params.IsSnapshotImage(n) || !params.OwnedBy(n, d.opts.InstanceID) {
			continue
		}
		s, err := d.snapshotEntry(ctx, a, poolID, n)
		if err != nil {
			return nil, err
		}
		if s != nil && (source == "" || s.GetSourceVolumeId() == source) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (d *controllerService) snapshotEntry(ctx context.Context, a poolAccess, poolID int64, image string) (*csi.Snapshot, error) {
	ref := ceph.ImageRef{Cluster: a.cluster, Pool: a.pool, Name: image}
	snap, own, err := d.statSnapshot(ctx, a.creds, ref)
	if snap == nil || err != nil {
		return nil, err
	}
	id, err := encodeSnapshotID(ref, poolID, own.User)
	if err != nil {
		return nil, nil //nolint:nilerr // a name that cannot form an ID is not one of our snapshots
	}
	snap.SnapshotId = id
	return snap, nil
}
