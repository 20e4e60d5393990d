package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// plaintextMarker is written into encrypted volumes and must not be found
// in what rbd export reads from Ceph.
var plaintextMarker = []byte("rbd-csi plaintext marker: this must never reach the OSDs unencrypted\n")

// encryptedFixture is a fixture whose volumes are encrypted.
func encryptedFixture(t *testing.T, fs string) *fixture {
	t.Helper()
	f := newFixture(t, fs)
	f.params = map[string]string{"encrypted": "true"}
	f.kek = harness.NewKEK(t)
	return f
}

// needDMCrypt skips, saying why, where LUKS cannot be opened or the
// (slow, emulated) guest runs did not ask for these tests.
func needDMCrypt(t *testing.T) {
	t.Helper()
	if !harness.HasDMCrypt() {
		t.Skip("this kernel has no device-mapper: encrypted volumes are tested in make test-kernel (KERNEL_SUITES=crypt)")
	}
	if os.Getenv("RBDCSI_E2E_CRYPT") != "1" {
		t.Skip("RBDCSI_E2E_CRYPT is not 1: the encrypted-volume tests run in their own guest suite (KERNEL_SUITES=crypt)")
	}
}

// writeMarked writes n bytes of the plaintext marker to path (a file or a
// device), syncs them, and returns their checksum.
func writeMarked(t *testing.T, path string, n int) string {
	t.Helper()
	data := bytes.Repeat(plaintextMarker, n/len(plaintextMarker)+1)[:n]
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// wantCiphertextOnly exports the image and checks it is LUKS and holds no
// plaintext marker.
func wantCiphertextOnly(t *testing.T, f *fixture, image string) {
	t.Helper()
	raw, err := os.ReadFile(exportImage(t, f, image))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("LUKS\xba\xbe")) {
		t.Errorf("image %s does not start with a LUKS header", image)
	}
	if bytes.Contains(raw, plaintextMarker[:32]) {
		t.Errorf("image %s holds the plaintext written through the volume", image)
	}
}

func TestEncryptedStageOnANodeWithoutDMCryptIsFailedPrecondition(t *testing.T) {
	if harness.HasDMCrypt() {
		t.Skip("this kernel has device-mapper: the refusal is shown on one without (the development host)")
	}
	f := encryptedFixture(t, "ext4")
	f.create(t, 64<<20)
	_, err := f.drv.Node().NodeStageVolume(ctxT(t), &csi.NodeStageVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.stagingDir(t), VolumeCapability: f.capability(),
		Secrets: f.secrets(), VolumeContext: f.vol.VolumeContext,
	})
	if err == nil {
		// Undo it, so that the tests after this one start clean.
		_, uerr := f.drv.Node().NodeUnstageVolume(ctxT(t), &csi.NodeUnstageVolumeRequest{VolumeId: f.vol.VolumeId, StagingTargetPath: f.staging()})
		t.Fatalf("an encrypted volume staged on a node without device-mapper (unstaged again: %v); want FailedPrecondition naming device-mapper", uerr)
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "device-mapper") {
		t.Fatalf("stage of an encrypted volume without device-mapper: %v; want FailedPrecondition naming device-mapper", err)
	}
	if strings.Contains(err.Error(), f.kek) {
		t.Fatal("the error quotes the KEK")
	}
	if m := harness.KernelMappings(f.vol.VolumeContext["imageName"]); len(m) != 0 {
		t.Fatalf("mapped anyway: %v", m)
	}
}

func TestEncryptedVolumeKeepsItsDataAcrossRestageRestoreCloneAndExpansion(t *testing.T) {
	needDMCrypt(t)
	f := encryptedFixture(t, "ext4")
	f.create(t, 256<<20)
	image := f.vol.VolumeContext["imageName"]
	f.stagePublish(t)
	if src := mountSource(t, f.staging()); !strings.HasPrefix(src, "/dev/mapper/rbd-csi-") {
		t.Fatalf("staging mounted from %s, want the LUKS device", src)
	}
	want := writeMarked(t, filepath.Join(f.target(), "data.bin"), 4<<20)
	f.unpublishUnstage(t)
	if left := harness.CryptDevices(); len(left) != 0 {
		t.Fatalf("after unstage: %v", left)
	}
	wantCiphertextOnly(t, f, image)

	f.drv.Kill()
	f.drv.Restart()
	f.stagePublish(t)
	if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
		t.Fatalf("checksum after restage %s, written %s", got, want)
	}
	f.unpublishUnstage(t)

	snap, err := f.drv.Controller().CreateSnapshot(ctxT(t), &csi.CreateSnapshotRequest{Name: "snap-" + t.Name(), SourceVolumeId: f.vol.VolumeId, Secrets: f.secrets()})
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	t.Cleanup(func() {
		_, _ = f.drv.Controller().DeleteSnapshot(context.Background(), &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId, Secrets: f.secrets()})
	})
	restored := f.volumeFrom(t, "restored-"+t.Name(), snapshotSource(snap.Snapshot.SnapshotId))
	clone := f.volumeFrom(t, "clone-"+t.Name(), volumeSource(f.vol.VolumeId))
	for name, vol := range map[string]*csi.Volume{"restored": restored, "clone": clone} {
		if vol.VolumeContext["encrypted"] != "true" {
			t.Errorf("%s: volume context %v", name, vol.VolumeContext)
		}
		if got := f.readThroughNode(t, vol, "data.bin"); got != want {
			t.Errorf("%s volume: checksum %s, written %s", name, got, want)
		}
	}

	f.stagePublish(t)
	before := fsSize(t, f.target())
	if _, err := f.drv.Controller().ControllerExpandVolume(ctxT(t), &csi.ControllerExpandVolumeRequest{
		VolumeId: f.vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 512 << 20}, Secrets: f.secrets(), VolumeCapability: f.capability(),
	}); err != nil {
		t.Fatal(err)
	}
	_, err = f.drv.Node().NodeExpandVolume(ctxT(t), &csi.NodeExpandVolumeRequest{
		VolumeId: f.vol.VolumeId, VolumePath: f.target(), StagingTargetPath: f.staging(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 512 << 20}, VolumeCapability: f.capability(),
	})
	if f.mapper == mapper.RBDNBD && status.Code(err) == codes.Unavailable {
		t.Logf("rbd-nbd did not resize the device online (Ceph tracker 64139): growth at the next stage: %v", err)
		f.unpublishUnstage(t)
		f.stagePublish(t)
	} else if err != nil {
		t.Fatalf("online expansion: %v", err)
	}
	if after := fsSize(t, f.target()); after < before+200<<20 {
		t.Fatalf("filesystem grew from %d to %d bytes, want about +256 MiB", before, after)
	}
	if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
		t.Fatalf("checksum after expansion %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
}

func TestEncryptedRawBlockVolumeIsTheLUKSDevice(t *testing.T) {
	needDMCrypt(t)
	f := encryptedFixture(t, "")
	f.create(t, 64<<20)
	f.stagePublish(t)
	want := writeMarked(t, f.target(), 1<<20)
	f.unpublishUnstage(t)
	wantCiphertextOnly(t, f, f.vol.VolumeContext["imageName"])
	f.stagePublish(t)
	if got := readHead(t, f.target(), 1<<20); got != want {
		t.Fatalf("checksum of the block device after restage %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
}

// An image that holds a filesystem but claims to be encrypted (a wrapped
// key set by hand, a static volume pointing at the wrong image) must not
// be formatted: FailedPrecondition, and the data stays.
func TestEncryptedStageRefusesAnImageNeitherEmptyNorLUKS(t *testing.T) {
	needDMCrypt(t)
	f := newFixture(t, "ext4")
	f.create(t, 64<<20)
	f.stagePublish(t)
	want := writeRandom(t, filepath.Join(f.target(), "data.bin"), 1<<20)
	f.unpublishUnstage(t)

	image := f.vol.VolumeContext["imageName"]
	kek := harness.NewKEK(t)
	k, _ := kms.NewSecretKEK(kek)
	dek, _ := kms.NewDEK()
	blob, _ := k.Wrap(context.Background(), dek, image)
	b := librbd.New(librbd.Options{})
	t.Cleanup(b.Close)
	ref := ceph.ImageRef{Cluster: f.env.Cluster("e2e"), Pool: f.env.Pool, Name: image}
	if err := b.SetMetadata(ctxT(t), f.env.Admin, ref, map[string]string{kms.MetaDEK: blob}); err != nil {
		t.Fatal(err)
	}
	vc := map[string]string{"encrypted": "true"}
	for k, v := range f.vol.VolumeContext {
		vc[k] = v
	}
	secrets := f.secrets()
	secrets[kms.DefaultSecretKey] = kek
	_, err := f.drv.Node().NodeStageVolume(ctxT(t), &csi.NodeStageVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.stagingDir(t), VolumeCapability: f.capability(), Secrets: secrets, VolumeContext: vc,
	})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "holds ext4") || !strings.Contains(err.Error(), image) {
		t.Fatalf("encrypted stage of an ext4 image: %v; want FailedPrecondition naming the image and what it holds", err)
	}
	if err := b.RemoveMetadata(ctxT(t), f.env.Admin, ref, kms.MetaDEK); err != nil {
		t.Fatal(err)
	}
	f.stagePublish(t)
	if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
		t.Fatalf("the refused stage changed the data: checksum %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
}

// TestEncryptedVolumeOpensWithTheNewKEKOnlyAfterARotationKilledMidway: the
// data of an encrypted volume survives `rbd-csi rotate-kek` SIGKILLed
// between its steps and run again; while the rotation is midway, the
// volume stages with the rotation's Secrets (the new KEK, the old one as
// the previous); after it, with the new KEK alone, and the old one is
// refused.
func TestEncryptedVolumeOpensWithTheNewKEKOnlyAfterARotationKilledMidway(t *testing.T) {
	needDMCrypt(t)
	f := encryptedFixture(t, "ext4")
	f.create(t, 64<<20)
	image := f.vol.VolumeContext["imageName"]
	f.stagePublish(t)
	want := writeMarked(t, filepath.Join(f.target(), "data.bin"), 1<<20)
	f.unpublishUnstage(t)

	oldKEK, newKEK := f.kek, harness.NewKEK(t)
	// The Secrets switched first: the key is still under the old KEK alone.
	stageWithRotationSecrets(t, f, oldKEK, newKEK, want, "before the rotation")
	for _, point := range []string{"rotate-after-next", ""} {
		out, err := rotateKEK(t, f, image, oldKEK, newKEK, point)
		killed := false
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			ws, _ := exit.Sys().(syscall.WaitStatus)
			killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
		}
		switch {
		case point != "" && !killed:
			t.Fatalf("rotate-kek was not killed at %s: %v\n%s", point, err, out)
		case point == "" && !strings.Contains(out, image+": "):
			t.Fatalf("the resumed rotate-kek did not report %s: %v\n%s", image, err, out)
		}
		if point != "" {
			stageWithRotationSecrets(t, f, oldKEK, newKEK, want, "midway through the rotation")
		}
	}

	f.kek = oldKEK
	_, err := f.drv.Node().NodeStageVolume(ctxT(t), &csi.NodeStageVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.stagingDir(t), VolumeCapability: f.capability(),
		Secrets: f.secrets(), VolumeContext: f.vol.VolumeContext,
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stage with the old KEK after the rotation: %v; want FailedPrecondition", err)
	}
	if left := harness.CryptDevices(); len(left) != 0 {
		t.Fatalf("the refused stage left %v", left)
	}
	f.kek = newKEK
	f.stagePublish(t)
	if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
		t.Fatalf("checksum after the rotation %s, written %s", got, want)
	}
	f.unpublishUnstage(t)
	wantCiphertextOnly(t, f, image)
}

// stageWithRotationSecrets stages and publishes the fixture's volume with
// the Secrets of a rotation in progress (newKEK, and oldKEK as the
// previous one), checks data.bin, and unpublishes and unstages it.
func stageWithRotationSecrets(t *testing.T, f *fixture, oldKEK, newKEK, want, when string) {
	t.Helper()
	f.kek, f.kekPrevious = newKEK, oldKEK
	defer func() { f.kek, f.kekPrevious = oldKEK, "" }()
	f.stagePublish(t)
	if got := fileSum(t, filepath.Join(f.target(), "data.bin")); got != want {
		t.Fatalf("checksum %s %s, written %s", when, got, want)
	}
	f.unpublishUnstage(t)
}

// rotateKEK runs the driver binary's rotate-kek over the fixture's pool
// with the KEKs in files, SIGKILLed at failpoint when it is not "". Other
// tests' encrypted images in the pool (other KEKs) make it exit 1; the
// caller looks for its own image in the output.
func rotateKEK(t *testing.T, f *fixture, image, oldKEK, newKEK, failpoint string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"old": oldKEK, "new": newKEK}
	for name, k := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(k+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), "rotate-kek", "--pool", f.env.Pool,
		"--old-kek-file", filepath.Join(dir, "old"), "--new-kek-file", filepath.Join(dir, "new"))
	cmd.Env = append(os.Environ(), "CEPH_MON_HOST="+strings.Join(f.env.Monitors, ","), "CEPH_ADMIN_KEY="+f.env.Admin.Key, "CEPH_ADMIN_ID="+f.env.Admin.User)
	if failpoint != "" {
		cmd.Env = append(cmd.Env, "RBD_CSI_FAILPOINTS="+failpoint)
	}
	out, err := cmd.CombinedOutput()
	for _, k := range []string{oldKEK, newKEK} {
		if strings.Contains(string(out), k) {
			t.Fatal("rotate-kek printed a KEK") // and its output is not shown
		}
	}
	t.Logf("rotate-kek (failpoint %q): %v\n%s", failpoint, err, out)
	return string(out), err
}
