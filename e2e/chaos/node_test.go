package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// nodeVolume is one volume of scenario 3 with where it is staged and
// published and the checksum of what was written through it.
type nodeVolume struct {
	vol     *csi.Volume
	staging string
	target  string
	sum     [32]byte
}

func (v *nodeVolume) stageReq(p *harness.Pool) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging, VolumeCapability: mountCap("ext4"), Secrets: p.Secrets(), VolumeContext: v.vol.VolumeContext}
}

func (v *nodeVolume) publishReq() *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: mountCap("ext4"), VolumeContext: v.vol.VolumeContext}
}

// Scenario 3: the node plugin is SIGKILLed while volumes are staged and
// published (fuse mapper: a userspace process per image, the mapper with
// the most state to lose). After the restart, the data written before the
// kill reads back in place, unpublish and unstage succeed, nothing is left
// mounted, attached or running under the test's directories, and a fresh
// stage reads the same data back from Ceph.
func TestChaosNodePluginKilledWhileStagedAndPublished(t *testing.T) {
	requireChaos(t)
	if os.Geteuid() != 0 {
		t.Skip("the node path mounts filesystems and attaches loop devices: run as root")
	}
	p := harness.NewPool(t, clusterID)
	d := harness.Start(t, p.Dir, []string{
		"--mode=all", "--nodeid=chaos-node", "--cluster-config=" + p.ConfigPath(), "--instance-id=chaos-node",
		"--mapper=fuse", "--state-dir=" + filepath.Join(p.Dir, "state"), "--keyring-dir=" + filepath.Join(p.Dir, "keyrings"), "-v=10",
	})
	fig := newFigure("node-plugin-killed")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	vols := make([]*nodeVolume, 3)
	for i := range vols {
		vols[i] = setUpVolume(ctx, t, p, d, i)
	}
	d.Kill()
	d.Restart()
	// Reads must come through the mappings that survived, not the page
	// cache that holds what was written.
	dropPageCache(t)

	fig.set("volumes", len(vols))
	fig.zero(t, "corrupt_in_place", countCorrupt(t, vols))
	fig.zero(t, "teardown_failed", tearDown(ctx, d, vols))
	left := harness.Leftovers(p.Dir)
	fig.zero(t, "leftovers", len(left), left)
	for _, v := range vols {
		if err := stagePublish(ctx, p, d, v); err != nil {
			t.Fatalf("restage: %v", err)
		}
	}
	fig.zero(t, "corrupt_after_restage", countCorrupt(t, vols))
	fig.zero(t, "teardown_failed_after_restage", tearDown(ctx, d, vols))
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
	for _, v := range vols {
		if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	}
}

// setUpVolume creates, stages and publishes volume i and writes 1 MiB of
// random data through it, synced to the image.
func setUpVolume(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, i int) *nodeVolume {
	t.Helper()
	req := p.CreateReq(fmt.Sprintf("pvc-node-%d", i))
	req.CapacityRange.RequiredBytes = 256 << 20
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap("ext4")}
	resp, err := d.Controller().CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.Dir, fmt.Sprintf("vol%d", i))
	v := &nodeVolume{vol: resp.Volume, staging: filepath.Join(dir, "staging"), target: filepath.Join(dir, "pod", "mount")}
	t.Cleanup(func() { tearDown(context.Background(), d, []*nodeVolume{v}) })
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := stagePublish(ctx, p, d, v); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	v.sum = sha256.Sum256(data)
	if err := writeSynced(filepath.Join(v.target, "data.bin"), data); err != nil {
		t.Fatal(err)
	}
	return v
}

func stagePublish(ctx context.Context, p *harness.Pool, d *harness.Driver, v *nodeVolume) error {
	if _, err := d.Node().NodeStageVolume(ctx, v.stageReq(p)); err != nil {
		return fmt.Errorf("stage %s: %w", v.vol.VolumeId, err)
	}
	if _, err := d.Node().NodePublishVolume(ctx, v.publishReq()); err != nil {
		return fmt.Errorf("publish %s: %w", v.vol.VolumeId, err)
	}
	return nil
}

// tearDown unpublishes and unstages every volume and returns how many calls
// failed (it is also the test clean-up, where failures are ignored).
func tearDown(ctx context.Context, d *harness.Driver, vols []*nodeVolume) int {
	failed := 0
	for _, v := range vols {
		if _, err := d.Node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.vol.VolumeId, TargetPath: v.target}); err != nil {
			failed++
		}
		if _, err := d.Node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging}); err != nil {
			failed++
		}
	}
	return failed
}

// countCorrupt reads every volume's file back and counts those whose
// checksum differs from what was written.
func countCorrupt(t *testing.T, vols []*nodeVolume) int {
	t.Helper()
	bad := 0
	for _, v := range vols {
		data, err := os.ReadFile(filepath.Join(v.target, "data.bin"))
		if sum := sha256.Sum256(data); err != nil || !bytes.Equal(sum[:], v.sum[:]) {
			t.Logf("%s: read error %v or checksum mismatch", v.vol.VolumeId, err)
			bad++
		}
	}
	return bad
}

func writeSynced(path string, data []byte) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// dropPageCache writes back and drops the kernel's clean page cache (the
// scenario runs as root on the host).
func dropPageCache(t *testing.T) {
	t.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatalf("drop the page cache: %v", err)
	}
}
