package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// volumeFrom creates a volume from a content source and deletes it when
// the test ends.
func (f *fixture) volumeFrom(t *testing.T, name string, src *csi.VolumeContentSource) *csi.Volume {
	t.Helper()
	params := map[string]string{"clusterID": "e2e", "pool": f.env.Pool}
	maps.Copy(params, f.params)
	resp, err := f.drv.Controller().CreateVolume(ctxT(t), &csi.CreateVolumeRequest{
		Name: name, Parameters: params,
		Secrets: f.secrets(), VolumeCapabilities: []*csi.VolumeCapability{f.capability()},
		VolumeContentSource: src,
	})
	if err != nil {
		t.Fatalf("create %s from %v: %v", name, src, err)
	}
	vol := resp.Volume
	t.Cleanup(func() { f.deleteVolume(t, vol.VolumeId) })
	return vol
}

func (f *fixture) deleteVolume(t *testing.T, id string) {
	t.Helper()
	if _, err := f.drv.Controller().DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: f.secrets()}); err != nil {
		t.Errorf("delete volume %s: %v", id, err)
	}
}

// readThroughNode stages and publishes vol at its own paths, returns the
// checksum of file, and tears the mount down again.
func (f *fixture) readThroughNode(t *testing.T, vol *csi.Volume, file string) string {
	t.Helper()
	saved := f.vol
	f.vol = vol
	defer func() { f.vol = saved }()
	f.stagePublish(t)
	sum := fileSum(t, filepath.Join(f.target(), file))
	f.unpublishUnstage(t)
	return sum
}

func snapshotSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func volumeSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

// TestRestoreAndCloneCarryTheDataEvenWhenTheSourceIsDeletedFirst writes
// data through the node path, takes a snapshot and a clone, overwrites the
// source (which must not reach them), deletes the source and the snapshot
// before anything made from them, and reads the original data back through
// the node path from the restored volume and the clone.
func TestRestoreAndCloneCarryTheDataEvenWhenTheSourceIsDeletedFirst(t *testing.T) {
	f := newFixture(t, "ext4")
	f.create(t, 256<<20)
	f.stagePublish(t)
	want := writeRandom(t, filepath.Join(f.target(), "data.bin"), 8<<20)
	f.unpublishUnstage(t)

	snap, err := f.drv.Controller().CreateSnapshot(ctxT(t), &csi.CreateSnapshotRequest{
		Name: "snap-" + t.Name(), SourceVolumeId: f.vol.VolumeId, Secrets: f.secrets(),
		Parameters: map[string]string{"clusterID": "e2e"},
	})
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	if !snap.Snapshot.ReadyToUse || snap.Snapshot.SizeBytes != 256<<20 {
		t.Fatalf("snapshot %v: want ready, 256 MiB", snap.Snapshot)
	}
	clone := f.volumeFrom(t, "clone-"+t.Name(), volumeSource(f.vol.VolumeId))

	// Later writes to the source reach neither the snapshot nor the clone.
	f.stagePublish(t)
	writeRandom(t, filepath.Join(f.target(), "data.bin"), 8<<20)
	f.unpublishUnstage(t)

	restored := f.volumeFrom(t, "restored-"+t.Name(), snapshotSource(snap.Snapshot.SnapshotId))
	// Delete the source and then the snapshot while both copies live.
	f.deleteVolume(t, f.vol.VolumeId)
	if _, err := f.drv.Controller().DeleteSnapshot(ctxT(t), &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId, Secrets: f.secrets()}); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	for name, vol := range map[string]*csi.Volume{"restored": restored, "clone": clone} {
		if got := f.readThroughNode(t, vol, "data.bin"); got != want {
			t.Errorf("%s volume: checksum %s, written %s", name, got, want)
		}
	}
}

func blockCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// blockDevice stages and publishes a raw block volume, hands its device
// path to use, and tears it down again.
func (f *fixture) blockDevice(t *testing.T, vol *csi.Volume, use func(dev string)) {
	t.Helper()
	staging, target := filepath.Join(f.dir, "block-staging"), filepath.Join(f.dir, "pod", "dev")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	unstage := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := f.drv.Node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target}); err != nil {
			t.Errorf("unpublish: %v", err)
		}
		if _, err := f.drv.Node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging}); err != nil {
			t.Errorf("unstage: %v", err)
		}
	}
	defer unstage()
	if _, err := f.drv.Node().NodeStageVolume(ctxT(t), &csi.NodeStageVolumeRequest{
		VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: blockCapability(),
		Secrets: f.secrets(), VolumeContext: vol.VolumeContext,
	}); err != nil {
		t.Fatalf("stage: %v", err)
	}
	if _, err := f.drv.Node().NodePublishVolume(ctxT(t), &csi.NodePublishVolumeRequest{
		VolumeId: vol.VolumeId, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: blockCapability(), VolumeContext: vol.VolumeContext,
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	use(target)
}

// readHead checksums the first n bytes of a device.
func readHead(t *testing.T, dev string, n int) string {
	t.Helper()
	fh, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(fh, buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

// TestBlockRestoreAndCloneCarryTheData is the raw block variant: bytes
// written to the device of a block volume come back from a volume restored
// from its snapshot and from a clone of it, larger than the source.
func TestBlockRestoreAndCloneCarryTheData(t *testing.T) {
	f := newFixture(t, "")
	ctx := ctxT(t)
	resp, err := f.drv.Controller().CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "pvc-" + t.Name(), CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		Parameters: map[string]string{"clusterID": "e2e", "pool": f.env.Pool}, Secrets: f.secrets(),
		VolumeCapabilities: []*csi.VolumeCapability{blockCapability()},
	})
	if err != nil {
		t.Fatal(err)
	}
	src := resp.Volume
	t.Cleanup(func() { f.deleteVolume(t, src.VolumeId) })
	var want string
	f.blockDevice(t, src, func(dev string) { want = writeRandom(t, dev, 4<<20) })

	snap, err := f.drv.Controller().CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-" + t.Name(), SourceVolumeId: src.VolumeId, Secrets: f.secrets()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = f.drv.Controller().DeleteSnapshot(context.Background(), &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId, Secrets: f.secrets()})
	})
	for name, source := range map[string]*csi.VolumeContentSource{"restored": snapshotSource(snap.Snapshot.SnapshotId), "clone": volumeSource(src.VolumeId)} {
		resp, err := f.drv.Controller().CreateVolume(ctx, &csi.CreateVolumeRequest{
			Name: name + "-" + t.Name(), CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20},
			Parameters: map[string]string{"clusterID": "e2e", "pool": f.env.Pool}, Secrets: f.secrets(),
			VolumeCapabilities: []*csi.VolumeCapability{blockCapability()}, VolumeContentSource: source,
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vol := resp.Volume
		t.Cleanup(func() { f.deleteVolume(t, vol.VolumeId) })
		if vol.CapacityBytes != 128<<20 {
			t.Errorf("%s: capacity %d, want 128 MiB", name, vol.CapacityBytes)
		}
		f.blockDevice(t, vol, func(dev string) {
			if got := readHead(t, dev, 4<<20); got != want {
				t.Errorf("%s: checksum %s, written %s", name, got, want)
			}
		})
	}
}
