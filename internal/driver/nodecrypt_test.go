package driver

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt/crypttest"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// encNodeEnv is a nodeEnv whose volume is encrypted, on a simulated
// kernel with dm-crypt.
type encNodeEnv struct {
	*nodeEnv
	kernel *crypttest.Kernel
}

func newEncNodeEnv(t *testing.T) *encNodeEnv {
	t.Helper()
	e := newNodeEnv(t)
	k := crypttest.New(t)
	e.opts.Node.Crypt = k.Config()
	e.d = e.restart(t, e.m, e.mnt)
	resp, err := e.d.CreateVolume(context.Background(), encrypted(createReq("pvc-enc-node", 1<<30, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.volID, e.vc = resp.Volume.VolumeId, resp.Volume.VolumeContext
	e.ref.Name = e.vc["imageName"]
	return &encNodeEnv{nodeEnv: e, kernel: k}
}

func (e *encNodeEnv) encStageReq(c *csi.VolumeCapability) *csi.NodeStageVolumeRequest {
	r := e.stageReq(c)
	r.Secrets = encSecrets(testKEK)
	return r
}

func (e *encNodeEnv) cryptName() string { return crypt.DeviceName(e.volID) }

func (e *encNodeEnv) cryptPath() string { return crypt.New(e.kernel.Config()).Path(e.cryptName()) }

// wantNoKeyInCommands checks that no command got the DEK, its passphrase
// or the KEK in its arguments.
func (e *encNodeEnv) wantNoKeyInCommands(t *testing.T) {
	t.Helper()
	dek := dekOf(t, e.ceph, e.ref.Name, testKEK)
	calls, _ := e.kernel.Calls()
	for _, c := range calls {
		for _, secret := range []string{string(dek.Passphrase()), testKEK} {
			if strings.Contains(c.String(), secret) {
				t.Errorf("key material in the arguments of %q", c)
			}
		}
	}
}

func TestEncryptedMountVolumeIsFormattedOnceAndMountedThroughLUKS(t *testing.T) {
	e := newEncNodeEnv(t)
	ctx := context.Background()
	c := fsCap("ext4", modeSNW)
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	if got := e.kernel.Open(e.cryptName()); got != e.devPath() {
		t.Fatalf("LUKS device open over %q, want %q", got, e.devPath())
	}
	if src, _, err := e.mnt.MountInfo(e.staging); err != nil || src != e.cryptPath() {
		t.Fatalf("staging mounted from %q (%v), want the LUKS device %s", src, err, e.cryptPath())
	}
	// A repeated stage changes nothing.
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err != nil {
		t.Fatal(err)
	}
	if e.kernel.Open(e.cryptName()) != "" || e.m.mappedCount() != 0 {
		t.Fatalf("after unstage: LUKS open over %q, %d mapped", e.kernel.Open(e.cryptName()), e.m.mappedCount())
	}
	e.wantNothingStaged(t)
	// Staged again: opened, not formatted again.
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	calls, _ := e.kernel.Calls()
	formats := slices.IndexFunc(calls, func(c mapper.Command) bool { return c.Args[0] == "luksFormat" })
	if formats < 0 || slices.ContainsFunc(calls[formats+1:], func(c mapper.Command) bool { return c.Args[0] == "luksFormat" }) {
		t.Fatalf("want exactly one luksFormat, calls %v", calls)
	}
	e.wantNoKeyInCommands(t)
}

// What Ceph knows of an encrypted image (never written) says nothing of
// the opened LUKS device above it, so its filesystem is always probed for
// before mkfs.
func TestEncryptedVolumeIsProbedBeforeMkfsEvenWhenNeverWritten(t *testing.T) {
	e := newEncNodeEnv(t)
	e.ceph.Blank = map[string]bool{e.ref.Name: true}
	if _, err := e.d.NodeStageVolume(context.Background(), e.encStageReq(fsCap("ext4", modeSNW))); err != nil {
		t.Fatal(err)
	}
	if e.mnt.BlankFormats != 0 || e.mnt.Formatted != 1 {
		t.Fatalf("formats without a probe %d, mkfs runs %d; want 0 and 1", e.mnt.BlankFormats, e.mnt.Formatted)
	}
}

func TestEncryptedBlockVolumeIsPublishedAsTheLUKSDeviceAndGrowsWithIt(t *testing.T) {
	e := newEncNodeEnv(t)
	ctx := context.Background()
	c := blockCap(modeSNW)
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.target("a"), c)
	if src, _, _ := e.mnt.MountInfo(e.target("a")); src != e.cryptPath() {
		t.Fatalf("published %q, want the LUKS device %s", src, e.cryptPath())
	}
	if _, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging, VolumeCapability: c}); err != nil {
		t.Fatal(err)
	}
	calls, _ := e.kernel.Calls()
	if !slices.ContainsFunc(calls, func(c mapper.Command) bool { return c.Args[0] == "resize" && c.Args[1] == e.cryptName() }) {
		t.Fatalf("no cryptsetup resize in %v", calls)
	}
	// The controller asks for the node step even for a block volume.
	resp, err := e.d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: e.volID, Secrets: secrets(), CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}, VolumeCapability: c})
	if err != nil || !resp.NodeExpansionRequired {
		t.Fatalf("ControllerExpandVolume: %v, node expansion required %v", err, resp.GetNodeExpansionRequired())
	}
}

func TestEncryptedStageRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, e *encNodeEnv, r *csi.NodeStageVolumeRequest)
		code    codes.Code
		want    []string
	}{
		{name: "a node without device-mapper is FailedPrecondition naming it", code: codes.FailedPrecondition, want: []string{"device-mapper"},
			prepare: func(t *testing.T, e *encNodeEnv, _ *csi.NodeStageVolumeRequest) { e.kernel.RemoveDMCrypt(t, true) }},
		{name: "a node without dm-crypt is FailedPrecondition naming it", code: codes.FailedPrecondition, want: []string{"dm-crypt"},
			prepare: func(t *testing.T, e *encNodeEnv, _ *csi.NodeStageVolumeRequest) { e.kernel.RemoveDMCrypt(t, false) }},
		{name: "an image holding a filesystem is FailedPrecondition and not formatted", code: codes.FailedPrecondition, want: []string{"holds ext4", "refusing"},
			prepare: func(_ *testing.T, e *encNodeEnv, _ *csi.NodeStageVolumeRequest) { e.kernel.Other[e.devPath()] = "ext4" }},
		{name: "no KEK in the node stage secrets is InvalidArgument", code: codes.InvalidArgument, want: []string{"node stage secrets", "encryptionKEK"},
			prepare: func(_ *testing.T, _ *encNodeEnv, r *csi.NodeStageVolumeRequest) {
				delete(r.Secrets, kms.DefaultSecretKey)
			}},
		{name: "another KEK is FailedPrecondition", code: codes.FailedPrecondition, want: []string{"another key-encryption key"},
			prepare: func(_ *testing.T, _ *encNodeEnv, r *csi.NodeStageVolumeRequest) {
				r.Secrets[kms.DefaultSecretKey] = otherKEK
			}},
		{name: "an image without a wrapped key is FailedPrecondition", code: codes.FailedPrecondition, want: []string{"no wrapped data-encryption key"},
			prepare: func(t *testing.T, e *encNodeEnv, _ *csi.NodeStageVolumeRequest) {
				if err := e.ceph.RemoveMetadata(context.Background(), adminCreds(), e.ref, kms.MetaDEK); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "a plain volume context of an encrypted image is FailedPrecondition", code: codes.FailedPrecondition, want: []string{"encrypted"},
			prepare: func(_ *testing.T, _ *encNodeEnv, r *csi.NodeStageVolumeRequest) {
				delete(r.VolumeContext, "encrypted")
				r.Secrets = secrets()
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEncNodeEnv(t)
			r := e.encStageReq(fsCap("ext4", modeSNW))
			tc.prepare(t, e, r)
			_, err := e.d.NodeStageVolume(context.Background(), r)
			wantCode(t, err, tc.code, tc.want...)
			if e.kernel.Formatted(e.devPath()) || e.kernel.Open(e.cryptName()) != "" || e.m.mappedCount() != 0 {
				t.Errorf("formatted %v, open over %q, %d mapped", e.kernel.Formatted(e.devPath()), e.kernel.Open(e.cryptName()), e.m.mappedCount())
			}
			for _, secret := range []string{testKEK, otherKEK} {
				if strings.Contains(err.Error(), secret) {
					t.Error("the error quotes a KEK")
				}
			}
		})
	}
}

func TestEncryptedRestageAfterAPluginRestartReusesTheOpenDevice(t *testing.T) {
	e := newEncNodeEnv(t)
	ctx := context.Background()
	c := fsCap("ext4", modeSNW)
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	// The plugin died after opening LUKS, before mounting.
	if err := e.mnt.Unmount(ctx, e.staging); err != nil {
		t.Fatal(err)
	}
	e.d = e.restart(t, e.m, e.mnt)
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(c)); err != nil {
		t.Fatal(err)
	}
	if src, _, err := e.mnt.MountInfo(e.staging); err != nil || src != e.cryptPath() {
		t.Fatalf("staging mounted from %q (%v)", src, err)
	}
	calls, _ := e.kernel.Calls()
	opens := 0
	for _, c := range calls {
		if c.Args[0] == "open" {
			opens++
		}
	}
	if opens != 1 {
		t.Fatalf("%d cryptsetup open, want the first one only", opens)
	}
}

func TestUnstageClosesLUKSBeforeUnmapping(t *testing.T) {
	e := newEncNodeEnv(t)
	ctx := context.Background()
	if _, err := e.d.NodeStageVolume(ctx, e.encStageReq(blockCap(modeSNW))); err != nil {
		t.Fatal(err)
	}
	// The unmap fails: LUKS is closed already, the state stays for a retry.
	e.m.unmapErr = ceph.ErrBusy
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err == nil {
		t.Fatal("unstage succeeded with a failing unmap")
	}
	if e.kernel.Open(e.cryptName()) != "" {
		t.Fatal("LUKS device still open after the unmap was tried")
	}
	e.m.unmapErr = nil
	if _, err := e.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err != nil {
		t.Fatal(err)
	}
	e.wantNothingStaged(t)
}

// A volume rotate-kek has not reached yet stages with the Secrets of a
// rotation in progress: its key is under the previous KEK.
func TestEncryptedStageDuringAKEKRotationOpensWithThePreviousKEK(t *testing.T) {
	e := newEncNodeEnv(t)
	r := e.encStageReq(fsCap("ext4", modeSNW))
	r.Secrets = rotationSecrets()
	if _, err := e.d.NodeStageVolume(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if e.kernel.Open(e.cryptName()) == "" {
		t.Fatal("LUKS not opened")
	}
	e.wantNoKeyInCommands(t)
}
