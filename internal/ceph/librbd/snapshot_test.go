package librbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// TestSnapshotCloneFlattenContract checks on the real cluster what the
// driver relies on: idempotent snapshot creation with a true timestamp,
// clone v2 (a parent snapshot with a clone can be removed, the parent image
// trashed, and the clone still knows its parent), image-meta written over
// what librbd copies from the parent, depth counted through trashed
// parents, a flatten that detaches, and a trash purge refused while a clone
// depends on the image.
func TestSnapshotCloneFlattenContract(t *testing.T) {
	b, env, cl := testBackend(t, Options{PartialGrace: time.Nanosecond}) // its clean-up removes a young image
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	parent := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: "snaptest-parent-" + suffix}
	child := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: "snaptest-child-" + suffix}
	if err := b.CreateImage(ctx, env.Admin, parent, ceph.ImageSpec{Size: 64 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{"rbd-csi.owner": "parent"}}); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	s1, err := b.CreateSnap(ctx, env.Admin, parent, "s", ceph.MeasureDepth)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.CreateSnap(ctx, env.Admin, parent, "s", ceph.MeasureDepth)
	if err != nil || s2.ID != s1.ID || s1.Size != 64<<20 || s1.Created.Before(before) {
		t.Fatalf("snapshot %+v then %+v (%v)", s1, s2, err)
	}
	if _, err := b.StatSnap(ctx, env.Admin, parent, "missing"); !errors.Is(err, ceph.ErrNotFound) {
		t.Fatalf("StatSnap of a missing snapshot: %v", err)
	}
	spec := ceph.CloneSpec{Features: ceph.FeatureLayering | ceph.FeatureDeepFlatten, Metadata: map[string]string{"rbd-csi.owner": "child"}}
	if err := b.CloneImage(ctx, env.Admin, parent, "s", child, spec); err != nil {
		t.Fatal(err)
	}
	if err := b.CloneImage(ctx, env.Admin, parent, "s", child, spec); !errors.Is(err, ceph.ErrExists) {
		t.Fatalf("second clone: %v, want ErrExists", err)
	}
	if err := b.RemoveSnap(ctx, env.Admin, parent, "s"); err != nil {
		t.Fatalf("remove a snapshot with a clone (clone v2): %v", err)
	}
	parentIDs, err := b.TrashImage(ctx, env.Admin, parent)
	if err != nil || len(parentIDs) != 1 {
		t.Fatalf("trash a parent: %q, %v", parentIDs, err)
	}
	parentID := parentIDs[0]
	info, err := b.StatImage(ctx, env.Admin, child)
	if err != nil {
		t.Fatal(err)
	}
	// The parent keeps its name in the trash: the driver's unfinished-clone
	// check compares it.
	if info.Parent == nil || !info.Parent.InTrash || info.Parent.ImageID != parentID || info.Parent.Image != parent.Name || info.Metadata["rbd-csi.owner"] != "child" {
		t.Fatalf("clone: parent %+v, owner %q", info.Parent, info.Metadata["rbd-csi.owner"])
	}
	if d, err := b.CloneDepth(ctx, env.Admin, child); err != nil || d != 1 {
		t.Fatalf("depth %d, %v; want 1", d, err)
	}
	if err := b.PurgeTrash(ctx, env.Admin, cl, env.Pool, parentID, false); !errors.Is(err, ceph.ErrBusy) {
		t.Fatalf("purge of a parent a clone reads through: %v, want ErrBusy", err)
	}
	if err := b.FlattenImage(ctx, env.Admin, child, false); err != nil {
		t.Fatal(err)
	}
	if d, err := b.CloneDepth(ctx, env.Admin, child); err != nil || d != 0 {
		t.Fatalf("depth after flatten %d, %v; want 0", d, err)
	}
	if err := b.FlattenImage(ctx, env.Admin, child, false); err != nil {
		t.Fatalf("flatten of an image without parent: %v", err)
	}
	if err := b.PurgeTrash(ctx, env.Admin, cl, env.Pool, parentID, false); err != nil {
		t.Fatalf("purge once nothing depends on it: %v", err)
	}
	if err := b.RemovePartialImage(ctx, env.Admin, child); err != nil {
		t.Fatal(err)
	}
}

func TestListSnapsNamesUserSnapshotsOnly(t *testing.T) {
	b, env, cl := testBackend(t, Options{PartialGrace: time.Nanosecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	parent := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: "listsnaps-" + suffix}
	child := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: "listsnaps-child-" + suffix}
	if err := b.CreateImage(ctx, env.Admin, parent, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.RemovePartialImage(context.Background(), env.Admin, child)
		_ = b.RemovePartialImage(context.Background(), env.Admin, parent)
	})
	for _, s := range []string{"a", "b"} {
		if _, err := b.CreateSnap(ctx, env.Admin, parent, s, ceph.MeasureDepth); err != nil {
			t.Fatal(err)
		}
	}
	// "b" has a clone: removing it moves it to the trash namespace.
	if err := b.CloneImage(ctx, env.Admin, parent, "b", child, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveSnap(ctx, env.Admin, parent, "b"); err != nil {
		t.Fatal(err)
	}
	got, err := b.ListSnaps(ctx, env.Admin, parent)
	if err != nil || !slices.Equal(got, []string{"a"}) {
		t.Fatalf("ListSnaps = %v, %v; want [a]", got, err)
	}
	if err := b.RemoveSnap(ctx, env.Admin, parent, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListSnaps(ctx, env.Admin, ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: "missing-" + suffix}); !errors.Is(err, ceph.ErrNotFound) {
		t.Fatalf("ListSnaps of a missing image: %v, want ErrNotFound", err)
	}
}
