package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
)

// roundTripCalls is how many calls of each kind the round-trip phase makes;
// the OSD op counter's delta over them, divided by it, is the OSD round
// trips per call (background work of the mgr adds a little noise).
const roundTripCalls = 20

// osdOps reads the OSD's "op" perf counter: client operations it served.
// The harness runs one OSD (osd.0).
func osdOps(conn *rados.Conn) (uint64, error) {
	out, _, err := conn.OsdCommand(0, [][]byte{[]byte(`{"prefix": "perf dump"}`)})
	if err != nil {
		return 0, fmt.Errorf("osd.0 perf dump: %w", err)
	}
	var dump struct {
		OSD struct {
			Op uint64 `json:"op"`
		} `json:"osd"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		return 0, fmt.Errorf("osd.0 perf dump: %w", err)
	}
	return dump.OSD.Op, nil
}

// countOps runs op for i in [0,n) one after the other and returns the OSD
// operations per call.
func (b *bench) countOps(n int, op func(i int) error) (float64, error) {
	before, err := osdOps(b.conn)
	if err != nil {
		return 0, err
	}
	for i := range n {
		if err := op(i); err != nil {
			return 0, fmt.Errorf("call %d: %w", i, err)
		}
	}
	after, err := osdOps(b.conn)
	if err != nil {
		return 0, err
	}
	// The perf dump itself is no client op, so the delta is the calls'.
	return float64(after-before) / float64(n), nil
}

// roundTrips prints the OSD operations per call of each controller RPC
// and of the raw librbd steps it stands for (docs/design.md, "Where the
// time goes").
func (b *bench) roundTrips() error {
	n := roundTripCalls
	ctx := context.Background()
	ids := make([]string, n)
	raw := names("bench-rt-raw-", n)
	type line struct {
		what string
		op   func(int) error
	}
	var snapIDs, restoreIDs, cloneIDs []string
	snapIDs, restoreIDs, cloneIDs = make([]string, n), make([]string, n), make([]string, n)
	srcName := "bench-rt-raw-src"
	lines := []line{
		{"rbd.CreateImage (raw)", func(i int) error { return b.rawImage(raw[i]) }},
		{"CreateVolume", func(i int) error {
			r, err := b.client.CreateVolume(ctx, b.createReq(fmt.Sprintf("bench-rt-%d", i), 1<<30))
			if err == nil {
				ids[i] = r.Volume.VolumeId
			}
			return err
		}},
		{"ListVolumes, first walk (per volume)", b.listOnce},
		{"ListVolumes, next walks (per volume)", b.listOnce},
		{"GetCapacity", func(int) error {
			_, err := b.client.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": "bench", "pool": b.cfg.pool}})
			return err
		}},
		// A CSI snapshot is an image of its own: its raw counterpart is
		// the four librbd steps that make one, and a restore's is a clone
		// of such an image (a clone's parent opens its own parent too).
		{"snap+clone+snap+rm (raw)", func(i int) error {
			if i == 0 {
				if err := b.rawImage(srcName); err != nil {
					return err
				}
			}
			return b.rawSnapshotImage(srcName, i)
		}},
		{"CreateSnapshot", func(i int) error {
			r, err := b.client.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: fmt.Sprintf("bench-rt-snap-%d", i), SourceVolumeId: ids[0], Secrets: b.secrets()})
			if err == nil {
				snapIDs[i] = r.Snapshot.SnapshotId
			}
			return err
		}},
		{"rbd.CloneImage of a snapshot image (raw)", func(i int) error {
			return b.rawClone(rawSnapImage(srcName, i), "csi-snap", fmt.Sprintf("%s-clone-%d", srcName, i))
		}},
		{"CreateVolume from snapshot", func(i int) (err error) {
			restoreIDs[i], err = b.createFrom(fmt.Sprintf("bench-rt-restore-%d", i), &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapIDs[i]}}})
			return err
		}},
		{"CreateVolume from volume", func(i int) (err error) {
			cloneIDs[i], err = b.createFrom(fmt.Sprintf("bench-rt-clone-%d", i), &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: ids[i]}}})
			return err
		}},
		{"DeleteVolume (until it answers)", func(i int) error {
			for _, id := range []string{cloneIDs[i], restoreIDs[i]} {
				if _, err := b.client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: b.secrets()}); err != nil {
					return err
				}
			}
			return nil
		}},
		{"rbd.RemoveImage (raw)", func(i int) error {
			if err := rbd.RemoveImage(b.io, fmt.Sprintf("%s-clone-%d", srcName, i)); err != nil {
				return err
			}
			return rbd.RemoveImage(b.io, raw[i])
		}},
	}
	b.sum.note("OSD round trips per call (osd.0 op counter over %d sequential calls each):", n)
	for _, l := range lines {
		per, err := b.countOps(n, l.op)
		if err != nil {
			return fmt.Errorf("round trips of %s: %w", l.what, err)
		}
		switch l.what {
		case "DeleteVolume (until it answers)", "rbd.RemoveImage (raw)":
			per /= 2 // two deletions per call
		}
		b.sum.note("  %-38s %6.1f", l.what, per)
	}
	return b.roundTripCleanup(ids, snapIDs, srcName)
}

// createFrom creates a 1 GiB volume from a content source and returns its ID.
func (b *bench) createFrom(name string, src *csi.VolumeContentSource) (string, error) {
	req := b.createReq(name, 1<<30)
	req.VolumeContentSource = src
	r, err := b.client.CreateVolume(context.Background(), req)
	if err != nil {
		return "", err
	}
	return r.Volume.VolumeId, nil
}

// listOnce walks ListVolumes in pages of 500 once, for i == 0 only: over
// a countOps run of n calls that gives the OSD ops per listed volume, as
// the walk lists the n volumes the phase made.
func (b *bench) listOnce(i int) error {
	if i > 0 {
		return nil
	}
	_, _, err := walkVolumes(b.client)
	return err
}

func (b *bench) roundTripCleanup(ids, snapIDs []string, rawSrc string) error {
	ctx := context.Background()
	for _, id := range snapIDs {
		if _, err := b.client.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: b.secrets()}); err != nil {
			return fmt.Errorf("delete snapshot: %w", err)
		}
	}
	for _, id := range ids {
		if _, err := b.client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: b.secrets()}); err != nil {
			return fmt.Errorf("delete volume: %w", err)
		}
	}
	if err := b.removeRawSnapshotImages(rawSrc, len(snapIDs)); err != nil {
		return err
	}
	b.waitTrashDrainedOf("csi-", 5*time.Minute)
	return nil
}
