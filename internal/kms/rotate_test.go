package kms

import (
	"context"
	"errors"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
)

const fakeKey = "AQBdc1tlAAAAABAAl4m3cMfXTsXX0bO8Z2ZMXA=="

type rotateEnv struct {
	b        *cephfake.Backend
	creds    ceph.Credentials
	cl       ceph.Cluster
	old, new *SecretKEK
	deks     map[string]DEK
}

func newRotateEnv(t *testing.T, images ...string) *rotateEnv {
	t.Helper()
	e := &rotateEnv{b: cephfake.New("admin", fakeKey, "kube"), creds: ceph.Credentials{User: "admin", Key: fakeKey},
		cl: ceph.Cluster{ID: "c1", Monitors: []string{"127.0.0.1:6789"}}, old: mustKEK(t, kekA), new: mustKEK(t, kekB), deks: map[string]DEK{}}
	for _, name := range images {
		dek, _ := NewDEK()
		blob, _ := e.old.Wrap(context.Background(), dek, name)
		if err := e.b.CreateImage(context.Background(), e.creds, e.ref(name), ceph.ImageSpec{Size: 1 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{MetaDEK: blob}}); err != nil {
			t.Fatal(err)
		}
		e.deks[name] = dek
	}
	if err := e.b.CreateImage(context.Background(), e.creds, e.ref("plain"), ceph.ImageSpec{Size: 1 << 20, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *rotateEnv) ref(name string) ceph.ImageRef {
	return ceph.ImageRef{Cluster: e.cl, Pool: "kube", Name: name}
}

func (e *rotateEnv) rotation() Rotation {
	return Rotation{Backend: e.b, Creds: e.creds, Cluster: e.cl, Pool: "kube", Old: e.old, New: e.new}
}

// opens reports whether image opens with k, with its own DEK.
func (e *rotateEnv) opens(t *testing.T, name string, k KMS) bool {
	t.Helper()
	info, err := e.b.StatImage(context.Background(), e.creds, e.ref(name))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Unwrapped(context.Background(), k, info.Metadata, name)
	return err == nil && d.Equal(e.deks[name])
}

func TestRotationRewrapsEveryImageAndARerunChangesNothing(t *testing.T) {
	e := newRotateEnv(t, "a", "b")
	res, err := e.rotation().Run(context.Background())
	if err != nil || res.Rotated != 2 || res.Plain != 1 {
		t.Fatalf("first run: %+v, %v", res, err)
	}
	for _, name := range []string{"a", "b"} {
		if !e.opens(t, name, e.new) || e.opens(t, name, e.old) {
			t.Errorf("%s: opens with new %v, old %v; want new only", name, e.opens(t, name, e.new), e.opens(t, name, e.old))
		}
		info, _ := e.b.StatImage(context.Background(), e.creds, e.ref(name))
		if _, ok := info.Metadata[MetaDEKNext]; ok {
			t.Errorf("%s: %s left", name, MetaDEKNext)
		}
	}
	res, err = e.rotation().Run(context.Background())
	if err != nil || res.Rotated != 0 || res.Done != 2 {
		t.Fatalf("second run: %+v, %v", res, err)
	}
}

// The states a killed run leaves, each resumed by a rerun; in every one
// the volume opens with one of the two KEKs.
func TestRotationResumesFromEveryStepAKilledRunLeft(t *testing.T) {
	for _, step := range []string{"next written", "switched"} {
		t.Run(step, func(t *testing.T) {
			e := newRotateEnv(t, "a")
			ctx := context.Background()
			next, _ := e.new.Wrap(ctx, e.deks["a"], "a")
			md := map[string]string{MetaDEKNext: next}
			if step == "switched" {
				md[MetaDEK] = next
			}
			if err := e.b.SetMetadata(ctx, e.creds, e.ref("a"), md); err != nil {
				t.Fatal(err)
			}
			if !e.opens(t, "a", e.new) {
				t.Fatal("midway, the volume does not open with the new KEK")
			}
			if step == "next written" && !e.opens(t, "a", e.old) {
				t.Fatal("midway, the volume does not open with the old KEK")
			}
			if _, err := e.rotation().Run(ctx); err != nil {
				t.Fatal(err)
			}
			if !e.opens(t, "a", e.new) || e.opens(t, "a", e.old) {
				t.Fatal("after the rerun the volume does not open with the new KEK only")
			}
		})
	}
}

func TestRotationReportsAnImageUnderAThirdKEKAndGoesOn(t *testing.T) {
	e := newRotateEnv(t, "a", "b")
	third := mustKEK(t, "00000000000000000000000000000000000000000000000000000000000000ff")
	blob, _ := third.Wrap(context.Background(), e.deks["a"], "a")
	if err := e.b.SetMetadata(context.Background(), e.creds, e.ref("a"), map[string]string{MetaDEK: blob}); err != nil {
		t.Fatal(err)
	}
	res, err := e.rotation().Run(context.Background())
	if !errors.Is(err, ErrRotationIncomplete) || len(res.Failed) != 1 || res.Rotated != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	assertNoKeyMaterial(t, e.deks["a"], err.Error(), res.Failed[0])
}

func TestRotationRefusesTheSameKEKTwice(t *testing.T) {
	e := newRotateEnv(t, "a")
	r := e.rotation()
	r.New = e.old
	if _, err := r.Run(context.Background()); !errors.Is(err, ErrConfig) {
		t.Fatalf("err %v, want ErrConfig", err)
	}
}

// An image made while a run goes on (a CreateVolume or CreateSnapshot
// still under the old KEK) is found by the run's next listing.
func TestRotationTakesTheImagesMadeWhileItRan(t *testing.T) {
	e := newRotateEnv(t, "a")
	r := e.rotation()
	made := false
	r.Progress = func(image, outcome string) {
		if made {
			return
		}
		made = true
		dek, _ := NewDEK()
		blob, _ := e.old.Wrap(context.Background(), dek, "late")
		if err := e.b.CreateImage(context.Background(), e.creds, e.ref("late"), ceph.ImageSpec{Size: 1 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{MetaDEK: blob}}); err != nil {
			t.Error(err)
		}
		e.deks["late"] = dek
	}
	res, err := r.Run(context.Background())
	if err != nil || res.Rotated != 2 {
		t.Fatalf("%+v, %v; want both images re-wrapped", res, err)
	}
	if !e.opens(t, "late", e.new) || e.opens(t, "late", e.old) {
		t.Fatal("the image made during the run is not under the new KEK only")
	}
}
