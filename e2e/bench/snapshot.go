package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
)

// snapshotPhases measures CreateSnapshot and CreateVolume from a snapshot
// through the driver against the raw librbd steps they stand for. A CSI
// snapshot is an image of its own that outlives its source (docs/design.md,
// "Snapshots and clones"), so its raw counterpart is the same four steps
// done directly with go-ceph: a temporary snapshot of the source, a
// format-2 clone of it, the snapshot restores read from on the clone, and
// the temporary snapshot's removal. A restore's counterpart is one clone of
// that snapshot (rbd.CloneImage).
func (b *bench) snapshotPhases(conc, run int) error {
	n := b.cfg.snapCount
	tag := fmt.Sprintf("c%d-r%d", conc, run)
	src, err := b.client.CreateVolume(context.Background(), b.createReq("bench-snapsrc-"+tag, 1<<30))
	if err != nil {
		return fmt.Errorf("create snapshot source: %w", err)
	}
	rawSrc := "bench-raw-snapsrc-" + tag
	if err := b.rawImage(rawSrc); err != nil {
		return err
	}
	snapIDs := make([]string, n)
	drvSnap := func(i int) error {
		resp, err := b.client.CreateSnapshot(context.Background(), &csi.CreateSnapshotRequest{
			Name: fmt.Sprintf("bench-snap-%s-%d", tag, i), SourceVolumeId: src.Volume.VolumeId, Secrets: b.secrets(),
		})
		if err == nil {
			snapIDs[i] = resp.Snapshot.SnapshotId
		}
		return err
	}
	rawSnap := func(i int) error { return b.rawSnapshotImage(rawSrc, i) }
	drv, raw, err := measurePair(n, conc, drvSnap, rawSnap)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	b.report("CreateSnapshot", conc, drv, raw, "snap+clone+snap+rm", 0.8)

	volIDs := make([]string, n)
	drvRestore := func(i int) (err error) {
		volIDs[i], err = b.createFrom(fmt.Sprintf("bench-restore-%s-%d", tag, i), &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapIDs[i]}}})
		return err
	}
	rawClone := func(i int) error {
		return b.rawClone(rawSnapImage(rawSrc, i), "csi-snap", fmt.Sprintf("%s-clone-%d", rawSrc, i))
	}
	if drv, raw, err = measurePair(n, conc, drvRestore, rawClone); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	b.report("FromSnapshot", conc, drv, raw, "rbd.CloneImage", 0.8)
	return b.snapshotCleanup(src.Volume.VolumeId, rawSrc, snapIDs, volIDs)
}

// rawImage is the raw baseline's create: a 1 GiB format 2 image with
// layering, as the bench's StorageClass parameters make.
func (b *bench) rawImage(name string) error { return b.rawImageOf(name, 1<<30) }

func (b *bench) rawImageOf(name string, size uint64) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	_ = opts.SetUint64(rbd.ImageOptionFormat, 2)
	_ = opts.SetUint64(rbd.ImageOptionFeatures, rbd.FeatureLayering)
	return rbd.CreateImage(b.io, name, size, opts)
}

func (b *bench) rawSnapshot(image, snap string) error {
	img, err := rbd.OpenImage(b.io, image, rbd.NoSnapshot)
	if err != nil {
		return err
	}
	defer img.Close()
	_, err = img.CreateSnapshot(snap)
	return err
}

func rawSnapImage(src string, i int) string { return fmt.Sprintf("%s-snapimg-%d", src, i) }

// rawSnapshotImage does by hand what CreateSnapshot does: snapshot the
// source, clone the snapshot image from it, snapshot that, and remove the
// temporary snapshot (clone v2 keeps it in the trash namespace).
func (b *bench) rawSnapshotImage(src string, i int) error {
	tmp := fmt.Sprintf("tmp%d", i)
	if err := b.rawSnapshot(src, tmp); err != nil {
		return err
	}
	img := rawSnapImage(src, i)
	if err := b.rawCloneWith(src, tmp, img, rbd.FeatureLayering|rbd.FeatureDeepFlatten); err != nil {
		return err
	}
	if err := b.rawSnapshot(img, "csi-snap"); err != nil {
		return err
	}
	return b.rawRemoveSnapshot(src, tmp)
}

func (b *bench) rawRemoveSnapshot(image, snap string) error {
	img, err := rbd.OpenImage(b.io, image, rbd.NoSnapshot)
	if err != nil {
		return err
	}
	defer img.Close()
	return img.GetSnapshot(snap).Remove()
}

func (b *bench) rawClone(parent, snap, name string) error {
	return b.rawCloneWith(parent, snap, name, rbd.FeatureLayering)
}

func (b *bench) rawCloneWith(parent, snap, name string, features uint64) error {
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	_ = opts.SetUint64(rbd.ImageOptionFormat, 2)
	_ = opts.SetUint64(rbd.ImageOptionCloneFormat, 2)
	_ = opts.SetUint64(rbd.ImageOptionFeatures, features)
	return rbd.CloneImage(b.io, parent, snap, b.io, name, opts)
}

// snapshotCleanup deletes what the phases made, dependents first, and
// waits for the trash to drain so the next phase starts from a quiet pool.
func (b *bench) snapshotCleanup(srcID, rawSrc string, snapIDs, volIDs []string) error {
	ctx := context.Background()
	for _, id := range volIDs {
		if _, err := b.client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: b.secrets()}); err != nil {
			return fmt.Errorf("delete restored volume: %w", err)
		}
	}
	b.waitTrashDrainedOf("csi-vol-", 5*time.Minute)
	for _, id := range snapIDs {
		if _, err := b.client.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: b.secrets()}); err != nil {
			return fmt.Errorf("delete snapshot: %w", err)
		}
	}
	b.waitTrashDrainedOf("csi-snap-", 5*time.Minute)
	if _, err := b.client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: srcID, Secrets: b.secrets()}); err != nil {
		return fmt.Errorf("delete snapshot source: %w", err)
	}
	for i := range volIDs {
		if err := rbd.RemoveImage(b.io, fmt.Sprintf("%s-clone-%d", rawSrc, i)); err != nil {
			return fmt.Errorf("remove raw clone: %w", err)
		}
	}
	if err := b.removeRawSnapshotImages(rawSrc, len(volIDs)); err != nil {
		return err
	}
	drain := b.waitTrashDrainedOf("csi-", 10*time.Minute)
	fmt.Printf("  background purge of the snapshot phase's images finished %v after the last delete\n", drain.Round(time.Millisecond))
	return nil
}

// removeRawSnapshotImages removes the n snapshot images rawSnapshotImage
// made of rawSrc (their clones removed first), then rawSrc.
func (b *bench) removeRawSnapshotImages(rawSrc string, n int) error {
	for i := range n {
		snapImg := rawSnapImage(rawSrc, i)
		if err := b.rawRemoveSnapshot(snapImg, "csi-snap"); err != nil {
			return fmt.Errorf("remove raw snapshot image's snapshot: %w", err)
		}
		if err := rbd.RemoveImage(b.io, snapImg); err != nil {
			return fmt.Errorf("remove raw snapshot image: %w", err)
		}
	}
	if err := b.removeRawImageWithSnapshots(rawSrc); err != nil {
		return fmt.Errorf("remove raw snapshot source: %w", err)
	}
	return nil
}

// removeRawImageWithSnapshots removes a raw image and its snapshots.
func (b *bench) removeRawImageWithSnapshots(name string) error {
	img, err := rbd.OpenImage(b.io, name, rbd.NoSnapshot)
	if err != nil {
		return err
	}
	snaps, _ := img.GetSnapshotNames()
	for _, s := range snaps {
		_ = img.GetSnapshot(s.Name).Remove()
	}
	_ = img.Close()
	return rbd.RemoveImage(b.io, name)
}

// waitTrashDrainedOf waits until no trash entry with the prefix is left.
func (b *bench) waitTrashDrainedOf(prefix string, limit time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < limit {
		entries, err := rbd.GetTrashList(b.io)
		pending := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name, prefix) {
				pending++
			}
		}
		if err == nil && pending == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}
