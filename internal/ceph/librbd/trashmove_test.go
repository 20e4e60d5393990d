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
)

// A controller killed inside librbd's trash move leaves the trash entry
// in state MOVING. These tests rebuild the states such a crash leaves
// (with the same cls calls librbd makes) and check that TrashImage, as a
// retried DeleteVolume calls it, completes the move so the purge works.
func TestTrashImageFinishesAMoveInterruptedByACrash(t *testing.T) {
	tests := []struct {
		name     string
		idObject bool // crash before librbd removed rbd_id.<name>
	}{
		{"killed after adding the trash entry", true},
		{"killed after removing the id object", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, env, cl := testBackend(t, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("trashmove-test-%d", time.Now().UnixNano())}
			if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
				t.Fatal(err)
			}
			io := rawIOContext(t, b, env.Admin, cl, env.Pool)
			id := interruptedMove(t, io, ref.Name, tc.idObject)
			if err := rbd.TrashRemove(io, id, true); !isErrno(err, 117) { // EUCLEAN
				t.Fatalf("removing the half-moved entry: %v; the simulated crash state is not the one librbd refuses", err)
			}

			got, err := b.TrashImage(ctx, env.Admin, ref)
			if err != nil || !slices.Equal(got, []string{id}) {
				t.Fatalf("TrashImage: id %q, %v; want the half-moved entry %q", got, err, id)
			}
			if err := rbd.TrashRemove(io, id, true); err != nil {
				t.Fatalf("purge after the repair: %v", err)
			}
			names, err := rbd.GetImageNames(io)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(names, ref.Name) {
				t.Fatalf("%s still listed in rbd_directory", ref.Name)
			}
			if _, err := readImageID(io, ref.Name); !isErrno(err, 2) {
				t.Fatalf("rbd_id object: %v, want it gone", err)
			}
		})
	}
}

// interruptedMove trashes the image, then puts back what a crash inside
// librbd's move leaves: the entry MOVING, the name in rbd_directory, and
// optionally the rbd_id object.
func interruptedMove(t *testing.T, io *rados.IOContext, name string, idObj bool) string {
	t.Helper()
	id := trashByHand(t, io, name)
	if err := clsExec(io, "rbd_trash", "trash_state_set", append(encodeStrings(id), trashStateMoving, trashStateNormal)); err != nil {
		t.Fatalf("set trash state MOVING: %v", err)
	}
	if err := clsExec(io, "rbd_directory", "dir_add_image", encodeStrings(name, id)); err != nil {
		t.Fatalf("re-add directory entry: %v", err)
	}
	if idObj {
		if err := io.WriteFull(idObject(name), encodeStrings(id)); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// trashByHand moves the image to the trash with librbd and returns its ID.
func trashByHand(t *testing.T, io *rados.IOContext, name string) string {
	t.Helper()
	id, err := readImageID(io, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := rbd.GetImage(io, name).Trash(0); err != nil {
		t.Fatal(err)
	}
	return id
}

func rawIOContext(t *testing.T, b *Backend, cr ceph.Credentials, cl ceph.Cluster, pool string) *rados.IOContext {
	t.Helper()
	var io *rados.IOContext
	err := b.onPool(context.Background(), "test", ceph.ImageRef{Cluster: cl, Pool: pool}, cr, func(_ *conn, i *rados.IOContext) error {
		io = i
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return io
}

// A retried delete of an image an earlier attempt already trashed gets the
// IDs of every entry under the name: a volume deleted and created again
// reuses its name, so the trash may hold an earlier deletion's entry too,
// and the one the killed attempt made must be among those returned. An
// image in neither the pool nor the trash is ErrNotFound.
func TestTrashImageOfATrashedImageReturnsEveryEntryOfTheName(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("trashed-test-%d", time.Now().UnixNano())}
	var ids []string
	for range 2 { // the volume, deleted, created again and deleted again
		if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
			t.Fatal(err)
		}
		got, err := b.TrashImage(ctx, env.Admin, ref)
		if err != nil || len(got) != 1 {
			t.Fatalf("TrashImage: %q, %v; want the one new entry", got, err)
		}
		ids = append(ids, got[0])
	}
	again, err := b.TrashImage(ctx, env.Admin, ref)
	slices.Sort(again)
	slices.Sort(ids)
	if err != nil || !slices.Equal(again, ids) {
		t.Fatalf("retried TrashImage: %q, %v; want every entry of the name %q", again, err, ids)
	}
	io := rawIOContext(t, b, env.Admin, cl, env.Pool)
	for _, id := range ids {
		if err := rbd.TrashRemove(io, id, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.TrashImage(ctx, env.Admin, ref); !errors.Is(err, ceph.ErrNotFound) {
		t.Fatalf("TrashImage after the purge: %v, want ErrNotFound", err)
	}
}
