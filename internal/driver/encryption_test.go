package driver

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
	"github.com/rbd-csi/rbd-csi/internal/kms"
)

var (
	testKEK  = base64.StdEncoding.EncodeToString([]byte("kek-for-the-unit-tests-32-bytes!"))
	otherKEK = base64.StdEncoding.EncodeToString([]byte("another-kek-for-unit-tests-32by!"))
)

// encSecrets are the cephx secrets plus a KEK.
func encSecrets(kek string) map[string]string {
	s := secrets()
	s[kms.DefaultSecretKey] = kek
	return s
}

func encrypted(req *csi.CreateVolumeRequest) *csi.CreateVolumeRequest {
	req.Parameters["encrypted"] = "true"
	req.Secrets = encSecrets(testKEK)
	return req
}

// dekOf unwraps the DEK stored on an image with kek.
func dekOf(t *testing.T, fake *cephfake.Backend, name, kek string) kms.DEK {
	t.Helper()
	info, err := fake.StatImage(context.Background(), adminCreds(), ref(name))
	if err != nil {
		t.Fatal(err)
	}
	k, err := kms.NewSecretKEK(kek)
	if err != nil {
		t.Fatal(err)
	}
	dek, err := kms.Unwrapped(context.Background(), k, info.Metadata, name)
	if err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	return dek
}

func TestCreateVolumeEncryptedStoresOneWrappedKeyAndTellsTheNode(t *testing.T) {
	d, fake := newTestDriver(t)
	req := encrypted(createReq("pvc-enc", 1<<30, nil))
	vol := mustCreate(t, d, req)
	if vc := vol.GetVolumeContext(); vc["encrypted"] != "true" {
		t.Fatalf("volume context %v lacks encrypted=true", vc)
	}
	image := vol.GetVolumeContext()["imageName"]
	first := dekOf(t, fake, image, testKEK)
	// A retry keeps the same key: never a second one.
	mustCreate(t, d, req)
	if !dekOf(t, fake, image, testKEK).Equal(first) {
		t.Fatal("a retried CreateVolume replaced the volume key")
	}
	info, _ := fake.StatImage(context.Background(), adminCreds(), ref(image))
	if strings.Contains(info.Metadata[kms.MetaDEK], string(first.Passphrase())) {
		t.Fatal("the stored wrap holds the key in the clear")
	}
}

func TestCreateVolumeEncryptedFinishesAnInterruptedCreateWithAKey(t *testing.T) {
	d, fake := newTestDriver(t)
	req := encrypted(createReq("pvc-enc-crash", 1<<30, nil))
	plan, err := d.planCreate(req)
	if err != nil {
		t.Fatal(err)
	}
	// An earlier attempt died between creating the image and its metadata.
	if err := fake.CreateImage(context.Background(), plan.creds, plan.ref, ceph.ImageSpec{Size: plan.size, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, d, req)
	dekOf(t, fake, plan.ref.Name, testKEK)
}

func TestCreateVolumeEncryptionRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*csi.CreateVolumeRequest)
		code codes.Code
		want []string
	}{
		{name: "no KEK in the provisioner secrets is InvalidArgument naming the key", edit: func(r *csi.CreateVolumeRequest) { delete(r.Secrets, kms.DefaultSecretKey) }, code: codes.InvalidArgument, want: []string{"provisioner secrets", `"encryptionKEK"`}},
		{name: "a KEK that is no 256-bit key is InvalidArgument", edit: func(r *csi.CreateVolumeRequest) { r.Secrets[kms.DefaultSecretKey] = "hunter2" }, code: codes.InvalidArgument, want: []string{"32 random bytes"}},
		{name: "an unconfigured KMS ID is InvalidArgument", edit: func(r *csi.CreateVolumeRequest) { r.Parameters["encryptionKMSID"] = "vault-1" }, code: codes.InvalidArgument, want: []string{`"vault-1"`, "--kms-config"}},
		{name: "encrypted=yes is InvalidArgument", edit: func(r *csi.CreateVolumeRequest) { r.Parameters["encrypted"] = "yes" }, code: codes.InvalidArgument, want: []string{"encrypted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			req := encrypted(createReq("pvc-refused", 1<<30, nil))
			tc.edit(req)
			_, err := d.CreateVolume(context.Background(), req)
			wantCode(t, err, tc.code, tc.want...)
			if strings.Contains(err.Error(), "hunter2") {
				t.Error("the error quotes the KEK")
			}
			if imgs := fake.Images(testPool); len(imgs) != 0 {
				t.Errorf("images %v made", imgs)
			}
		})
	}
}

func TestEncryptedRepeatOfAPlainVolumeIsAlreadyExists(t *testing.T) {
	d, _ := newTestDriver(t)
	mustCreate(t, d, createReq("pvc-plain", 1<<30, nil))
	_, err := d.CreateVolume(context.Background(), encrypted(createReq("pvc-plain", 1<<30, nil)))
	wantCode(t, err, codes.AlreadyExists, "encrypted=false")
}

func TestRestoreAndCloneOfAnEncryptedVolumeKeepItsKeyWrappedForTheNewImage(t *testing.T) {
	d, fake := newTestDriver(t)
	src := mustCreate(t, d, encrypted(createReq("pvc-src", 1<<30, nil)))
	srcImage := src.GetVolumeContext()["imageName"]
	dek := dekOf(t, fake, srcImage, testKEK)
	snap := mustSnapshot(t, d, "snap-enc", src.GetVolumeId())
	for name, req := range map[string]*csi.CreateVolumeRequest{
		"pvc-restored": encrypted(fromSnapshot("pvc-restored", snap.GetSnapshotId(), 0)),
		"pvc-cloned":   encrypted(fromVolume("pvc-cloned", src.GetVolumeId(), 0)),
	} {
		vol := mustCreate(t, d, req)
		image := vol.GetVolumeContext()["imageName"]
		if vol.GetVolumeContext()["encrypted"] != "true" {
			t.Errorf("%s: volume context %v", name, vol.GetVolumeContext())
		}
		if !dekOf(t, fake, image, testKEK).Equal(dek) {
			t.Errorf("%s: opens with another key than its source", name)
		}
		// Idempotent: the retry answers the same volume.
		mustCreate(t, d, req)
	}
}

// A restore of a snapshot of a restored volume: each generation's key is
// bound to its own image, and the snapshot image carries its volume's.
func TestRestoreOfASnapshotOfARestoredVolumeKeepsTheKey(t *testing.T) {
	d, fake := newTestDriver(t)
	src := mustCreate(t, d, encrypted(createReq("pvc-src", 1<<30, nil)))
	dek := dekOf(t, fake, src.GetVolumeContext()["imageName"], testKEK)
	snap := mustSnapshot(t, d, "snap-1", src.GetVolumeId())
	restored := mustCreate(t, d, encrypted(fromSnapshot("pvc-r1", snap.GetSnapshotId(), 0)))
	snap2 := mustSnapshot(t, d, "snap-2", restored.GetVolumeId())
	again := mustCreate(t, d, encrypted(fromSnapshot("pvc-r2", snap2.GetSnapshotId(), 0)))
	clone := mustCreate(t, d, encrypted(fromVolume("pvc-c", again.GetVolumeId(), 0)))
	for _, v := range []*csi.Volume{restored, again, clone} {
		image := v.GetVolumeContext()["imageName"]
		if !dekOf(t, fake, image, testKEK).Equal(dek) {
			t.Errorf("%s opens with another key than the first volume", image)
		}
	}
}

// A wrapped key copied onto a content source from another volume unwraps
// with the right KEK, but it is bound to that other volume: the restore or
// clone is refused instead of making a volume that opens with a key its
// data was never written with.
func TestRestoreOrCloneOfASourceHoldingAnotherVolumesKeyIsFailedPrecondition(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	victim := mustCreate(t, d, encrypted(createReq("pvc-victim", 1<<30, nil)))
	other := mustCreate(t, d, encrypted(createReq("pvc-other", 1<<30, nil)))
	snap := mustSnapshot(t, d, "snap-victim", victim.GetVolumeId())
	otherInfo, err := fake.StatImage(ctx, adminCreds(), ref(other.GetVolumeContext()["imageName"]))
	if err != nil {
		t.Fatal(err)
	}
	_, snapImage, _ := decodeSnapshotID(snap.GetSnapshotId())
	tests := []struct {
		name  string
		image string // where the other volume's wrap is copied to
		req   *csi.CreateVolumeRequest
	}{
		{"a snapshot image holding another volume's key", snapImage, encrypted(fromSnapshot("pvc-r", snap.GetSnapshotId(), 0))},
		{"a source volume holding another volume's key", victim.GetVolumeContext()["imageName"], encrypted(fromVolume("pvc-c", victim.GetVolumeId(), 0))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := fake.SetMetadata(ctx, adminCreds(), ref(tt.image), map[string]string{kms.MetaDEK: otherInfo.Metadata[kms.MetaDEK]}); err != nil {
				t.Fatal(err)
			}
			_, err := d.CreateVolume(ctx, tt.req)
			wantCode(t, err, codes.FailedPrecondition, "another volume")
		})
	}
}

func TestRestoreAcrossEncryptionIsInvalidArgument(t *testing.T) {
	d, _ := newTestDriver(t)
	enc := mustCreate(t, d, encrypted(createReq("pvc-enc", 1<<30, nil)))
	plain := mustCreate(t, d, createReq("pvc-plain", 1<<30, nil))
	encSnap := mustSnapshot(t, d, "snap-enc", enc.GetVolumeId())
	plainSnap := mustSnapshot(t, d, "snap-plain", plain.GetVolumeId())
	for name, req := range map[string]*csi.CreateVolumeRequest{
		"encrypted snapshot into a plain class":  fromSnapshot("r1", encSnap.GetSnapshotId(), 0),
		"encrypted volume into a plain class":    fromVolume("r2", enc.GetVolumeId(), 0),
		"plain snapshot into an encrypted class": encrypted(fromSnapshot("r3", plainSnap.GetSnapshotId(), 0)),
		"plain volume into an encrypted class":   encrypted(fromVolume("r4", plain.GetVolumeId(), 0)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := d.CreateVolume(context.Background(), req)
			wantCode(t, err, codes.InvalidArgument, "encrypted")
		})
	}
}

func TestRestoreWithAnotherKEKIsFailedPrecondition(t *testing.T) {
	d, fake := newTestDriver(t)
	src := mustCreate(t, d, encrypted(createReq("pvc-src", 1<<30, nil)))
	snap := mustSnapshot(t, d, "snap-enc", src.GetVolumeId())
	req := encrypted(fromSnapshot("pvc-r", snap.GetSnapshotId(), 0))
	req.Secrets = encSecrets(otherKEK)
	before := map[string]bool{}
	for _, img := range fake.Images(testPool) {
		before[img] = true
	}
	_, err := d.CreateVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition, "another key-encryption key")
	for _, img := range fake.Images(testPool) {
		if !before[img] {
			t.Errorf("image %s made", img)
		}
	}
}

// rotationSecrets are the Secrets of a KEK rotation in progress: otherKEK
// is the new KEK, testKEK the previous one.
func rotationSecrets() map[string]string {
	s := encSecrets(otherKEK)
	s[kms.PreviousSecretKey(kms.DefaultSecretKey)] = testKEK
	return s
}

// wrappedWith is the fingerprint of the KEK an image's key is wrapped with.
func wrappedWith(t *testing.T, fake *cephfake.Backend, name string) string {
	t.Helper()
	info, err := fake.StatImage(context.Background(), adminCreds(), ref(name))
	if err != nil {
		t.Fatal(err)
	}
	w, err := kms.Describe(info.Metadata[kms.MetaDEK])
	if err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	return w.KEKID
}

// During a rotation (the new KEK in the Secret, the old one as the
// previous), volumes and restores of old volumes are wrapped with the new
// KEK, so rotate-kek has nothing of theirs to do.
func TestCreateAndRestoreDuringAKEKRotationWrapWithTheNewKEK(t *testing.T) {
	d, fake := newTestDriver(t)
	src := mustCreate(t, d, encrypted(createReq("pvc-src", 1<<30, nil)))
	snap := mustSnapshot(t, d, "snap-enc", src.GetVolumeId())
	newKEK, _ := kms.NewSecretKEK(otherKEK)

	fresh := encrypted(createReq("pvc-new", 1<<30, nil))
	fresh.Secrets = rotationSecrets()
	restore := encrypted(fromSnapshot("pvc-r", snap.GetSnapshotId(), 0))
	restore.Secrets = rotationSecrets()
	var restored string
	for _, req := range []*csi.CreateVolumeRequest{fresh, restore} {
		image := mustCreate(t, d, req).GetVolumeContext()["imageName"]
		if got := wrappedWith(t, fake, image); got != newKEK.KEKID() {
			t.Errorf("%s: wrapped with %s, want the new KEK %s", req.Name, got, newKEK.KEKID())
		}
		restored = image
	}
	if !dekOf(t, fake, restored, otherKEK).Equal(dekOf(t, fake, src.GetVolumeContext()["imageName"], testKEK)) {
		t.Fatal("the restore does not keep its source's key")
	}
}
