package librbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
)

// partialFixture is a backend with the given grace, a fresh image name in
// the test pool, and a raw I/O context there to build crash states with.
func partialFixture(t *testing.T, grace time.Duration, prefix string) (*Backend, cephtest.Env, context.Context, ceph.ImageRef, *rados.IOContext) {
	t.Helper()
	b, env, cl := testBackend(t, Options{PartialGrace: grace})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())}
	return b, env, ctx, ref, rawIOContext(t, b, env.Admin, cl, env.Pool)
}

// A controller killed inside librbd's create leaves a name without a
// header. The tests rebuild each such state with the calls librbd makes and
// check that RemovePartialImage clears it, so that the retried create
// succeeds.
func TestRemovePartialImageClearsWhatAnInterruptedCreateLeft(t *testing.T) {
	tests := []struct {
		name           string
		dirEntry, idOb bool
	}{
		{"killed after the directory entry and the id object", true, true},
		{"killed after the directory entry only", true, false},
		{"killed after the id object only", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The pieces are made just now; the grace is tested apart.
			b, env, ctx, ref, io := partialFixture(t, time.Nanosecond, "partial-create")
			const id = "feedc0ffee01"
			if tc.dirEntry {
				if err := clsExec(io, "rbd_directory", "dir_add_image", encodeStrings(ref.Name, id)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.idOb {
				if err := io.WriteFull(idObject(ref.Name), encodeStrings(id)); err != nil {
					t.Fatal(err)
				}
			}
			spec := ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}
			if err := b.CreateImage(ctx, env.Admin, ref, spec); !errors.Is(err, ceph.ErrExists) {
				t.Fatalf("create over the pieces: %v, want ErrExists (else the simulated state is not what a crash leaves)", err)
			}

			if err := b.RemovePartialImage(ctx, env.Admin, ref); err != nil {
				t.Fatalf("RemovePartialImage: %v", err)
			}
			if _, err := readImageID(io, ref.Name); !isErrno(err, 2) {
				t.Errorf("rbd_id object: %v, want it gone", err)
			}
			if names, _ := rbd.GetImageNames(io); slices.Contains(names, ref.Name) {
				t.Errorf("%s still listed", ref.Name)
			}
			if err := b.CreateImage(ctx, env.Admin, ref, spec); err != nil {
				t.Fatalf("create after the clean-up: %v", err)
			}
			if err := b.RemovePartialImage(ctx, env.Admin, ref); err != nil {
				t.Fatalf("removing the whole image: %v", err)
			}
		})
	}
}

// Pieces under a name may be a create still running elsewhere: while the
// rbd_id object is younger than the grace, RemovePartialImage touches
// nothing; once older, it clears them.
func TestRemovePartialImageLeavesYoungPiecesAlone(t *testing.T) {
	tests := []struct {
		name      string
		header    bool
		grace     time.Duration
		wantErr   error
		wantStays bool
	}{
		{"young pieces without a header stay", false, time.Hour, ceph.ErrInProgress, true},
		{"a young whole image without owner record stays", true, time.Hour, ceph.ErrInProgress, true},
		{"pieces older than the grace are cleared", false, time.Nanosecond, nil, false},
		{"a whole image older than the grace is removed", true, time.Nanosecond, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, env, ctx, ref, io := partialFixture(t, tc.grace, "young")
			if tc.header {
				if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := io.WriteFull(idObject(ref.Name), encodeStrings("feedc0ffee02")); err != nil {
					t.Fatal(err)
				}
				if err := clsExec(io, "rbd_directory", "dir_add_image", encodeStrings(ref.Name, "feedc0ffee02")); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				cleaner := New(Options{PartialGrace: time.Nanosecond})
				defer cleaner.Close()
				_ = cleaner.RemovePartialImage(context.Background(), env.Admin, ref)
			})

			err := b.RemovePartialImage(ctx, env.Admin, ref)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("RemovePartialImage: %v, want %v", err, tc.wantErr)
			}
			_, err = readImageID(io, ref.Name)
			names, _ := rbd.GetImageNames(io)
			if stays := err == nil && slices.Contains(names, ref.Name); stays != tc.wantStays {
				t.Fatalf("name still there: %v, want %v (rbd_id: %v)", stays, tc.wantStays, err)
			}
		})
	}
}

// A controller killed inside rbd_remove leaves a trash entry with source
// REMOVING that rbd_trash_list (and so `rbd trash ls`) never shows, while
// `rbd ls` lists the name and nothing opens it. A retry comes back through
// RemovePartialImage or, for an unfinished clone, through CloneImage: both
// must finish the removal, which also drops the clone's reference on its
// parent snapshot.
func TestAnInterruptedRemovalIsFinishedByTheRetry(t *testing.T) {
	retries := []struct {
		name  string
		retry func(ctx context.Context, b *Backend, cr ceph.Credentials, parent, child ceph.ImageRef) error
	}{
		{"RemovePartialImage", func(ctx context.Context, b *Backend, cr ceph.Credentials, _, child ceph.ImageRef) error {
			err := b.RemovePartialImage(ctx, cr, child)
			if errors.Is(err, ceph.ErrNotFound) {
				return nil
			}
			return err
		}},
		{"CloneImage", func(ctx context.Context, b *Backend, cr ceph.Credentials, parent, child ceph.ImageRef) error {
			if err := b.CloneImage(ctx, cr, parent, "s", child, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
				return err
			}
			return b.RemovePartialImage(ctx, cr, child)
		}},
	}
	for _, rt := range retries {
		for _, state := range []byte{0, 2} { // NORMAL, REMOVING
			t.Run(fmt.Sprintf("%s, entry in state %d", rt.name, state), func(t *testing.T) {
				b, env, cl := testBackend(t, Options{PartialGrace: time.Nanosecond})
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				stamp := time.Now().UnixNano()
				parent := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("removal-parent-%d", stamp)}
				child := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("removal-child-%d", stamp)}
				if err := b.CreateImage(ctx, env.Admin, parent, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
					t.Fatal(err)
				}
				if _, err := b.CreateSnap(ctx, env.Admin, parent, "s", ceph.MeasureDepth); err != nil {
					t.Fatal(err)
				}
				if err := b.CloneImage(ctx, env.Admin, parent, "s", child, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
					t.Fatal(err)
				}
				io := rawIOContext(t, b, env.Admin, cl, env.Pool)
				id := interruptedRemoval(t, io, child.Name, state)
				if kids := childrenOf(t, io, parent.Name); len(kids) != 1 {
					t.Fatalf("children of the parent's snapshot: %v; want the half-removed clone", kids)
				}

				if err := rt.retry(ctx, b, env.Admin, parent, child); err != nil {
					t.Fatalf("retry: %v", err)
				}
				recs, err := trashRecords(io)
				if err != nil {
					t.Fatal(err)
				}
				if slices.ContainsFunc(recs, func(r trashRecord) bool { return r.id == id }) {
					t.Fatalf("trash entry %s of %s still there", id, child.Name)
				}
				if kids := childrenOf(t, io, parent.Name); len(kids) != 0 {
					t.Fatalf("the parent's snapshot still has children %v", kids)
				}
			})
		}
	}
}

// interruptedRemoval trashes the image and rewrites its entry the way
// rbd_remove writes it (source REMOVING), in the given state. It checks
// the premise: rbd_trash_list hides the entry and `rbd ls` lists the name.
func interruptedRemoval(t *testing.T, io *rados.IOContext, name string, state byte) string {
	t.Helper()
	id := trashByHand(t, io, name)
	vals, err := io.GetOmapValues("rbd_trash", "", trashKeyPrefix+id, 1)
	if err != nil || len(vals) != 1 {
		t.Fatalf("read the trash entry: %v (%d values)", err, len(vals))
	}
	val := slices.Clone(vals[trashKeyPrefix+id])
	val[6] = trashSourceRemoving
	val[len(val)-1] = state
	if err := io.SetOmap("rbd_trash", map[string][]byte{trashKeyPrefix + id: val}); err != nil {
		t.Fatal(err)
	}
	listed, err := rbd.GetTrashList(io)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(listed, func(e rbd.TrashInfo) bool { return e.Id == id }) {
		t.Fatal("rbd_trash_list shows the entry: the simulated state is not the one rbd_remove leaves")
	}
	if names, _ := rbd.GetImageNames(io); !slices.Contains(names, name) {
		t.Fatal("rbd ls does not list the name: the simulated state is not the one rbd_remove leaves")
	}
	return id
}

// childrenOf lists the clones of name@s, those in the trash included.
func childrenOf(t *testing.T, io *rados.IOContext, name string) []rbd.ImageSpec {
	t.Helper()
	img, err := rbd.OpenImageReadOnly(io, name, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	kids, err := img.ListChildrenAttributes()
	if err != nil {
		t.Fatal(err)
	}
	return kids
}

// The bytes are an entry as Ceph 16.2.15 wrote it for an image rbd_remove
// was removing when its process was killed.
func TestDecodeTrashRecord(t *testing.T) {
	entry := []byte("\x02\x01\x3e\x00\x00\x00\x03\x28\x00\x00\x00" +
		"tf5d360-98d348b0b163a3603a6d28d0799a33b1" +
		"\xd5\x57\x0e\x6b\xa5\xb7\x74\x0c\xd5\x57\x0e\x6b\xa5\xb7\x74\x0c\x02")
	rec, err := decodeTrashRecord(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := trashRecord{name: "tf5d360-98d348b0b163a3603a6d28d0799a33b1", source: trashSourceRemoving, state: 2}
	deleted := time.Date(2026, 12, 1, 5, 15, 1, 208975781, time.UTC)
	if got := rec.deleted; !got.Equal(deleted) {
		t.Errorf("deletion time %v, want %v", got, deleted)
	}
	rec.deleted = time.Time{}
	if rec != want {
		t.Fatalf("decoded %+v, want %+v", rec, want)
	}
	// Every truncation is an error, never a panic or a wrong name.
	for n := range len(entry) {
		if rec, err := decodeTrashRecord(entry[:n]); err == nil {
			t.Errorf("truncated to %d bytes: decoded %+v without an error", n, rec)
		}
	}
}
