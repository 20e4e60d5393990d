// Package node tests the node plugin end to end on a real Ceph cluster with
// the mapper named by $RBDCSI_E2E_MAPPER (fuse by default; e2e/kernel runs
// them with krbd and rbd-nbd on a real kernel): data written through a
// published volume survives unstage, a driver restart and restage; a
// SIGKILLed plugin can still unpublish and unstage; nothing is left mounted,
// attached, mapped or running afterwards.
package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

type fixture struct {
	env    cephtest.Env
	dir    string
	drv    *harness.Driver
	vol    *csi.Volume
	fs     string // "" for a raw block volume
	mode   csi.VolumeCapability_AccessMode_Mode
	mapper string
	// params are extra StorageClass parameters for create.
	params map[string]string
	// kek, when set, is the KEK every Secret carries (encrypted volumes);
	// kekPrevious, the one a rotation in progress retires.
	kek, kekPrevious string
}

func newFixture(t *testing.T, fs string) *fixture {
	t.Helper()
	env := cephtest.FromEnv(t)
	if os.Geteuid() != 0 {
		t.Skip("the node path mounts filesystems and attaches loop devices: run as root")
	}
	dir := t.TempDir()
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	cfg := filepath.Join(dir, "clusters.json")
	if err := os.WriteFile(cfg, []byte(env.ClusterConfigJSON("e2e")), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fixture{env: env, dir: dir, fs: fs, mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, mapper: harness.Mapper(t)}
	f.drv = harness.Start(t, dir, []string{
		"--mode=all", "--nodeid=n1", "--cluster-config=" + cfg, "--instance-id=node-" + hex.EncodeToString(id),
		"--mapper=" + f.mapper, "--state-dir=" + filepath.Join(dir, "state"), "--keyring-dir=" + filepath.Join(dir, "keyrings"), "-v=4",
	})
	t.Cleanup(func() {
		for _, l := range harness.Leftovers(dir) {
			t.Errorf("left behind: %s", l)
		}
	})
	return f
}

func (f *fixture) secrets() map[string]string {
	s := map[string]string{"userID": f.env.Admin.User, "userKey": f.env.Admin.Key}
	if f.kek != "" {
		s[kms.DefaultSecretKey] = f.kek
	}
	if f.kekPrevious != "" {
		s[kms.PreviousSecretKey(kms.DefaultSecretKey)] = f.kekPrevious
	}
	return s
}

func (f *fixture) capability() *csi.VolumeCapability {
	if f.fs == "" {
		return blockCapability()
	}
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: f.fs}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: f.mode},
	}
}

func (f *fixture) staging() string { return filepath.Join(f.dir, "staging") }
func (f *fixture) target() string  { return filepath.Join(f.dir, "pod", "mount") }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (f *fixture) create(t *testing.T, size int64) {
	t.Helper()
	params := map[string]string{"clusterID": "e2e", "pool": f.env.Pool, "mounter": f.mapper}
	for k, v := range f.params {
		params[k] = v
	}
	resp, err := f.drv.Controller().CreateVolume(ctxT(t), &csi.CreateVolumeRequest{
		Name: "pvc-" + t.Name(), CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		Parameters:         params,
		Secrets:            f.secrets(),
		VolumeCapabilities: []*csi.VolumeCapability{f.capability()},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.vol = resp.Volume
	image := f.vol.VolumeContext["imageName"]
	t.Cleanup(func() {
		// Runs after the unstage cleanups: a krbd or rbd-nbd device of
		// this image lives outside the test's directory.
		for _, l := range harness.KernelMappings(image) {
			t.Errorf("left behind: %s", l)
		}
		_, err := f.drv.Controller().DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: f.vol.VolumeId, Secrets: f.secrets()})
		if err != nil {
			t.Errorf("delete volume: %v", err)
		}
	})
}

// stagingDir creates the staging directory and returns it.
func (f *fixture) stagingDir(t *testing.T) string {
	t.Helper()
	if err := os.MkdirAll(f.staging(), 0o750); err != nil {
		t.Fatal(err)
	}
	return f.staging()
}

func (f *fixture) stagePublish(t *testing.T) {
	t.Helper()
	f.stagingDir(t)
	_, err := f.drv.Node().NodeStageVolume(ctxT(t), &csi.NodeStageVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging(), VolumeCapability: f.capability(),
		Secrets: f.secrets(), VolumeContext: f.vol.VolumeContext,
	})
	if err != nil {
		t.Fatalf("stage: %v", err)
	}
	_, err = f.drv.Node().NodePublishVolume(ctxT(t), &csi.NodePublishVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging(), TargetPath: f.target(),
		VolumeCapability: f.capability(), VolumeContext: f.vol.VolumeContext,
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	// A test that fails half way still tears down what it set up (both
	// calls are idempotent); the leftover check then sees a clean node.
	// The volume is captured now: tests swap f.vol for restores and clones.
	volID, target, staging := f.vol.VolumeId, f.target(), f.staging()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = f.drv.Node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target})
		_, _ = f.drv.Node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volID, StagingTargetPath: staging})
	})
}

func (f *fixture) unpublishUnstage(t *testing.T) {
	t.Helper()
	if _, err := f.drv.Node().NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: f.vol.VolumeId, TargetPath: f.target()}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	if _, err := f.drv.Node().NodeUnstageVolume(ctxT(t), &csi.NodeUnstageVolumeRequest{VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging()}); err != nil {
		t.Fatalf("unstage: %v", err)
	}
}

func writeRandom(t *testing.T, path string, n int) string {
	t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestDataSurvivesUnstageDriverRestartAndRestage(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			f := newFixture(t, fs)
			f.create(t, 512<<20)
			f.stagePublish(t)
			want := writeRandom(t, filepath.Join(f.target(), "data.bin"), 4<<20)
			f.unpublishUnstage(t)

			f.drv.Kill()
			f.drv.Restart()

			f.stagePublish(t)
			if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
				t.Fatalf("checksum after restage %s, written %s", got, want)
			}
			f.unpublishUnstage(t)
			if fs == "ext4" {
				if got := sumFromExport(t, f, "/data.bin"); got != want {
					t.Fatalf("checksum read from Ceph with rbd export %s, written %s", got, want)
				}
			}
		})
	}
}

// sumFromExport reads a file out of the image with rbd export and debugfs:
// a path through Ceph that shares nothing with the driver.
func sumFromExport(t *testing.T, f *fixture, file string) string {
	t.Helper()
	raw := exportImage(t, f, f.vol.VolumeContext["imageName"])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	dump := exec.CommandContext(ctx, "debugfs", "-R", "cat "+file, raw)
	dump.Stdout = &out
	if err := dump.Run(); err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	sum := sha256.Sum256(out.Bytes())
	return hex.EncodeToString(sum[:])
}

// exportImage copies the image out of Ceph with rbd export and returns the
// file's path.
func exportImage(t *testing.T, f *fixture, img string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "image.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rbd", "export", "--no-progress", "-m", strings.Join(f.env.Monitors, ","), "--id", "admin", f.env.Pool+"/"+img, raw)
	cmd.Env = append(os.Environ(), "CEPH_ARGS=--keyring="+keyringFile(t, f.env.Admin.Key))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbd export: %v: %s", err, out)
	}
	return raw
}

func keyringFile(t *testing.T, key string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keyring")
	if err := os.WriteFile(p, []byte("[client.admin]\n\tkey = "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPluginKilledWhilePublishedCanStillUnpublishAndUnstage(t *testing.T) {
	f := newFixture(t, "ext4")
	f.create(t, 256<<20)
	f.stagePublish(t)
	want := writeRandom(t, filepath.Join(f.target(), "before-kill.bin"), 1<<20)

	f.drv.Kill()
	f.drv.Restart()

	// The mapping outlived the plugin: the data is still readable in place.
	if got := fileSum(t, filepath.Join(f.target(), "before-kill.bin")); got != want {
		t.Fatalf("checksum after plugin kill %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
	f.stagePublish(t)
	if got := fileSum(t, filepath.Join(f.target(), "before-kill.bin")); got != want {
		t.Fatalf("checksum after restage %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
}

func TestExpandGrowsTheMountedFilesystem(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			f := newFixture(t, fs)
			f.create(t, 512<<20)
			f.stagePublish(t)
			before := fsSize(t, f.target())
			if _, err := f.drv.Controller().ControllerExpandVolume(ctxT(t), &csi.ControllerExpandVolumeRequest{
				VolumeId: f.vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
				Secrets: f.secrets(), VolumeCapability: f.capability(),
			}); err != nil {
				t.Fatal(err)
			}
			_, err := f.drv.Node().NodeExpandVolume(ctxT(t), &csi.NodeExpandVolumeRequest{
				VolumeId: f.vol.VolumeId, VolumePath: f.target(), StagingTargetPath: f.staging(),
				CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}, VolumeCapability: f.capability(),
			})
			if f.mapper == mapper.RBDNBD && status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "issues/64139") {
				// Pacific's rbd-nbd does not resize a netlink-mapped
				// device (Ceph tracker 64139): the driver must say so
				// rather than grow nothing and answer OK, and the next
				// stage, which maps the image at its new size, grows the
				// filesystem.
				t.Logf("rbd-nbd did not resize the device online (Ceph tracker 64139): checking growth at the next stage: %v", err)
				f.unpublishUnstage(t)
				f.stagePublish(t)
			} else if fs == "ext4" && !hasCapSysResource(t) {
				// The kernel refuses online ext4 growth without
				// CAP_SYS_RESOURCE; the driver must say so, and the next
				// stage must grow the filesystem offline instead.
				t.Log("this process lacks CAP_SYS_RESOURCE: checking the refusal and growth at the next stage instead of online growth")
				if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
					t.Fatalf("NodeExpandVolume without CAP_SYS_RESOURCE: %v; want FailedPrecondition naming the capability", err)
				}
				f.unpublishUnstage(t)
				f.stagePublish(t)
			} else if err != nil {
				t.Fatal(err)
			}
			after := fsSize(t, f.target())
			if after < before+400<<20 {
				t.Fatalf("filesystem grew from %d to %d bytes, want about +512 MiB", before, after)
			}
			f.unpublishUnstage(t)
		})
	}
}

// hasCapSysResource reports whether this process (and so the driver it
// starts) holds CAP_SYS_RESOURCE, which online ext4 resize needs.
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			const capSysResource = 24
			return caps&(1<<capSysResource) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "df", "-B1", "--output=size", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(out))
	var n int64
	for _, c := range lines[len(lines)-1] {
		n = n*10 + int64(c-'0')
	}
	return n
}

func TestRawBlockVolumeKeepsDataAcrossRestage(t *testing.T) {
	f := newFixture(t, "")
	f.create(t, 256<<20)
	f.stagePublish(t)
	// The device is unmapped in between: the read cannot come from the
	// first mapping's page cache.
	want := writeRandom(t, f.target(), 1<<20)
	f.unpublishUnstage(t)

	f.stagePublish(t)
	if got := readHead(t, f.target(), 1<<20); got != want {
		t.Fatalf("checksum of the block device after restage %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
}

// An unstage while a process still holds the device open must fail with
// FailedPrecondition and a message that says so, leave the volume
// unstageable, and succeed once the process lets go: nothing is leaked.
func TestUnstageWhileDeviceHeldOpenFailsCleanlyThenSucceeds(t *testing.T) {
	f := newFixture(t, "ext4")
	f.create(t, 256<<20)
	f.stagePublish(t)
	dev := mountSource(t, f.staging())
	if _, err := f.drv.Node().NodeUnpublishVolume(ctxT(t), &csi.NodeUnpublishVolumeRequest{VolumeId: f.vol.VolumeId, TargetPath: f.target()}); err != nil {
		t.Fatalf("unpublish: %v", err)
	}
	holder, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.drv.Node().NodeUnstageVolume(ctxT(t), &csi.NodeUnstageVolumeRequest{VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging()})
	holder.Close()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("unstage while %s is held open: %v; want FailedPrecondition saying the device is in use", dev, err)
	}
	if _, err := f.drv.Node().NodeUnstageVolume(ctxT(t), &csi.NodeUnstageVolumeRequest{VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging()}); err != nil {
		t.Fatalf("unstage after the holder closed the device: %v", err)
	}
}

// mountSource returns the device mounted at path.
func mountSource(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "findmnt", "-n", "-o", "SOURCE", "--mountpoint", path).Output()
	if err != nil {
		t.Fatalf("findmnt %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}
