package librbd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestCreateDefaultsSendToLibrbdWhatOnlyLibrbdCreates(t *testing.T) {
	plain := createDefaults{order: 22}
	layering := ceph.ImageSpec{Size: 1 << 30, Features: ceph.FeatureLayering}
	tests := []struct {
		name   string
		d      createDefaults
		spec   ceph.ImageSpec
		direct bool
	}{
		{"layering with default settings is made directly", plain, layering, true},
		{"exclusive-lock and deep-flatten need nothing at creation", plain, ceph.ImageSpec{Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureDeepFlatten}, true},
		{"a stripe of one whole object is no striping", createDefaults{order: 22, stripeUnit: 4 << 20, stripeCount: 1}, layering, true},
		{"a default data pool naming the pool itself is none", createDefaults{order: 22, dataPool: "kube"}, layering, true},
		{"object-map needs its map written", plain, ceph.ImageSpec{Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff}, false},
		{"journaling needs its journal", plain, ceph.ImageSpec{Features: ceph.FeatureExclusiveLock | ceph.FeatureJournaling}, false},
		{"a data pool in the request", plain, ceph.ImageSpec{Features: ceph.FeatureLayering, DataPool: "ec"}, false},
		{"a default data pool set for the pool", createDefaults{order: 22, dataPool: "ec"}, layering, false},
		{"default striping", createDefaults{order: 22, stripeUnit: 64 << 10, stripeCount: 16}, layering, false},
		{"an order librbd refuses", createDefaults{order: 26}, layering, false},
		{"settings that could not be read", createDefaults{order: 22, err: errors.New("no")}, layering, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.direct("kube", tc.spec); got != tc.direct {
				t.Fatalf("direct = %v, want %v", got, tc.direct)
			}
		})
	}
}

// headerKeys is the header object's omap, less what differs between any
// two images (the timestamps, the ID in the data object prefix).
func headerKeys(t *testing.T, io *rados.IOContext, id string) map[string]string {
	t.Helper()
	vals, err := io.GetAllOmapValues(headerObject(id), "", "", 100)
	if err != nil {
		t.Fatalf("header of %s: %v", id, err)
	}
	out := map[string]string{}
	for k, v := range vals {
		switch k {
		case "create_timestamp", "access_timestamp", "modify_timestamp":
			continue
		case "object_prefix":
			if got, _, err := decodeString(v); err != nil || got != dataPrefix+id {
				t.Errorf("object_prefix of %s = %q, %v; want %q", id, got, err, dataPrefix+id)
			}
			continue
		}
		out[k] = fmt.Sprintf("%x", v)
	}
	return out
}

// The driver's own create must leave exactly what librbd's would: the
// same header keys and values, the same directory entries, and an image
// that librbd opens, writes, snapshots, grows and removes as its own.
func TestDirectCreateLeavesWhatLibrbdsCreateWould(t *testing.T) {
	b, env, ctx, ref, io := partialFixture(t, time.Minute, "direct-create")
	md := map[string]string{"rbd-csi.owner": `{"name":"direct"}`}
	spec := ceph.ImageSpec{Size: 96 << 20, Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureDeepFlatten, Metadata: md}
	if direct, err := directFor(t, b, env.Admin, ref, spec); err != nil || !direct {
		t.Skipf("pool %s does not take direct creates (direct %v, %v): run `rbd pool init %s` first", ref.Pool, direct, err, ref.Pool)
	}
	if err := b.CreateImage(ctx, env.Admin, ref, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbd.RemoveImage(io, ref.Name) })
	viaLibrbd := ref
	viaLibrbd.Name += "-librbd"
	if err := createImage(io, viaLibrbd.Name, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbd.RemoveImage(io, viaLibrbd.Name) })
	if err := writeNewImageMetadata(io, viaLibrbd.Name, md); err != nil {
		t.Fatal(err)
	}

	ids := map[string]string{}
	for _, name := range []string{ref.Name, viaLibrbd.Name} {
		id, err := readImageID(io, name)
		if err != nil {
			t.Fatal(err)
		}
		dirID, err := imageIDOf(io, name)
		if err != nil || dirID != id {
			t.Fatalf("rbd_directory has %s as %q (%v), rbd_id.%s says %q", name, dirID, err, name, id)
		}
		ids[name] = id
	}
	if got, want := headerKeys(t, io, ids[ref.Name]), headerKeys(t, io, ids[viaLibrbd.Name]); !maps.Equal(got, want) {
		t.Fatalf("header made directly:\n%v\nmade by librbd:\n%v", got, want)
	}

	img, err := rbd.OpenImage(io, ref.Name, rbd.NoSnapshot)
	if err != nil {
		t.Fatalf("librbd cannot open the image: %v", err)
	}
	data := []byte("written through librbd")
	if _, err := img.WriteAt(data, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(128 << 20); err != nil {
		t.Fatal(err)
	}
	snap, err := img.CreateSnapshot("s")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := img.ReadAt(got, 8<<20); err != nil || string(got) != string(data) {
		t.Fatalf("read back %q, %v", got, err)
	}
	meta, err := img.GetMetadata("rbd-csi.owner")
	if err != nil || meta != md["rbd-csi.owner"] {
		t.Fatalf("owner record through librbd = %q, %v", meta, err)
	}
	if err := snap.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rbd.RemoveImage(io, ref.Name); err != nil {
		t.Fatalf("librbd cannot remove the image: %v", err)
	}
	if _, err := imageIDOf(io, ref.Name); !isErrno(err, syscall.ENOENT) {
		t.Fatalf("after librbd's removal the name still resolves: %v", err)
	}
}

// directFor asks the backend's connection for ref's cluster and cr
// whether it would make an image of spec in ref's pool itself.
func directFor(t *testing.T, b *Backend, cr ceph.Credentials, ref ceph.ImageRef, spec ceph.ImageSpec) (bool, error) {
	t.Helper()
	var direct bool
	err := b.onPool(context.Background(), "test", ref, cr, func(c *conn, io *rados.IOContext) error {
		var err error
		_, direct, err = c.directCreate(io, ref, spec)
		return err
	})
	return direct, err
}

// A directory entry left under the name (a removal cut short) refuses the
// create; the rbd_id object the create had already written is taken back,
// so the name is left as it was found.
func TestDirectCreateTakesTheNameBackWhenTheDirectoryRefusesIt(t *testing.T) {
	b, env, ctx, ref, io := partialFixture(t, time.Minute, "direct-refused")
	spec := ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}
	if direct, err := directFor(t, b, env.Admin, ref, spec); err != nil || !direct {
		t.Skipf("pool %s does not take direct creates (direct %v, %v): run `rbd pool init %s` first", ref.Pool, direct, err, ref.Pool)
	}
	const leftID = "feedc0ffee02"
	if err := clsExec(io, "rbd_directory", "dir_add_image", encodeStrings(ref.Name, leftID)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clsExec(io, "rbd_directory", "dir_remove_image", encodeStrings(ref.Name, leftID)) })
	if err := b.CreateImage(ctx, env.Admin, ref, spec); !errors.Is(err, ceph.ErrExists) {
		t.Fatalf("create under a left directory entry: %v, want ErrExists", err)
	}
	if _, err := io.Stat(idObject(ref.Name)); !isErrno(err, syscall.ENOENT) {
		t.Fatalf("rbd_id.%s after the refused create: %v, want it taken back", ref.Name, err)
	}
	if id, err := imageIDOf(io, ref.Name); err != nil || id != leftID {
		t.Fatalf("directory entry after the refused create: %q, %v; want the one left there", id, err)
	}
}

// `rbd config pool set POOL rbd_default_data_pool DATA` asks every create
// in POOL for a data pool, which librbd's create applies and the driver's
// own does not: a pool with such a setting is left to librbd.
func TestCreateInAPoolWithADefaultDataPoolGoesThroughLibrbd(t *testing.T) {
	b, env, cl := testBackend(t, Options{OpTimeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := fmt.Sprintf("defaults-%d", time.Now().UnixNano())
	for _, cmd := range []map[string]any{
		{"prefix": "osd pool create", "pool": pool, "pg_num": 8},
		{"prefix": "osd pool application enable", "pool": pool, "app": "rbd", "yes_i_really_mean_it": true},
	} {
		if _, err := b.MonCommand(ctx, env.Admin, cl, cmd); err != nil {
			t.Fatalf("%v: %v", cmd["prefix"], err)
		}
	}
	t.Cleanup(func() {
		cmd := map[string]any{"prefix": "osd pool delete", "pool": pool, "pool2": pool, "yes_i_really_really_mean_it": true}
		_, _ = b.MonCommand(context.Background(), env.Admin, cl, cmd)
	})
	if err := b.PoolInit(ctx, env.Admin, cl, pool); err != nil {
		t.Fatalf("pool init: %v", err)
	}
	spec := ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}
	plain := ceph.ImageRef{Cluster: cl, Pool: pool, Name: "plain"}
	if direct, err := directFor(t, b, env.Admin, plain, spec); err != nil || !direct {
		t.Fatalf("an initialised pool without settings: direct %v, %v; want a direct create", direct, err)
	}
	io := rawIOContext(t, b, env.Admin, cl, pool)
	if err := io.SetOmap(poolInfoObject, map[string][]byte{metadataPrefix + "conf_rbd_default_data_pool": []byte(env.Pool)}); err != nil {
		t.Fatal(err)
	}
	// A fresh backend: the first one trusts what it read for a while.
	b2, _, _ := testBackend(t, Options{OpTimeout: 20 * time.Second})
	ref := ceph.ImageRef{Cluster: cl, Pool: pool, Name: "with-data-pool"}
	if direct, err := directFor(t, b2, env.Admin, ref, spec); err != nil || direct {
		t.Fatalf("a pool with a default data pool: direct %v, %v; want librbd", direct, err)
	}
	if err := b2.CreateImage(ctx, env.Admin, ref, spec); err != nil {
		t.Fatal(err)
	}
	info, err := b2.StatImage(ctx, env.Admin, ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.DataPool != env.Pool {
		t.Fatalf("image made in a pool whose default data pool is %s has data pool %q", env.Pool, info.DataPool)
	}
}

func TestObjectsHoldingListsEachObjectOnceWithinTheImage(t *testing.T) {
	const mib = 1 << 20
	rng := func(off, n uint64) ceph.ByteRange { return ceph.ByteRange{Offset: off, Length: n} }
	tests := []struct {
		name   string
		size   uint64
		ranges []ceph.ByteRange
		want   []uint64
	}{
		{"both ends of a 1 GiB image", 1 << 30, []ceph.ByteRange{rng(0, 16*mib), rng(1<<30-16*mib, 16*mib)}, []uint64{0, 1, 2, 3, 252, 253, 254, 255}},
		{"overlapping ranges name an object once", 12 * mib, []ceph.ByteRange{rng(0, 8*mib), rng(4*mib, 8*mib)}, []uint64{0, 1, 2}},
		{"a range past the end is clipped", 6 * mib, []ceph.ByteRange{rng(0, 16*mib)}, []uint64{0, 1}},
		{"a range ending on an object boundary stops before the next", 1 << 30, []ceph.ByteRange{rng(4*mib, 4*mib)}, []uint64{1}},
		{"empty and out-of-image ranges name nothing", 4 * mib, []ceph.ByteRange{rng(0, 0), rng(8*mib, mib)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := objectsHolding(22, tc.size, tc.ranges); !slices.Equal(got, tc.want) {
				t.Fatalf("objectsHolding = %v, want %v", got, tc.want)
			}
		})
	}
}

// Unwritten must see a write anywhere in the ranges asked about, and never
// vouch for a clone, whose unwritten objects read from its parent.
func TestUnwrittenSeesWritesAndNeverVouchesForAClone(t *testing.T) {
	b, env, ctx, ref, io := partialFixture(t, time.Minute, "unwritten")
	spec := ceph.ImageSpec{Size: 64 << 20, Features: ceph.FeatureLayering}
	if err := b.CreateImage(ctx, env.Admin, ref, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbd.RemoveImage(io, ref.Name) })
	head := []ceph.ByteRange{{Offset: 0, Length: 16 << 20}}
	tail := []ceph.ByteRange{{Offset: 48 << 20, Length: 16 << 20}}
	ask := func(ref ceph.ImageRef, ranges []ceph.ByteRange) bool {
		t.Helper()
		h, err := b.ReadHeader(ctx, env.Admin, ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Unwritten(ctx, env.Admin, ref, h, ranges)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if !ask(ref, append(head, tail...)) {
		t.Fatal("a new image is reported written")
	}
	img, err := rbd.OpenImage(io, ref.Name, rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte{1}, 60<<20); err != nil {
		t.Fatal(err)
	}
	snap, err := img.CreateSnapshot("base")
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Protect(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if ask(ref, tail) {
		t.Error("a byte written at 60 MiB is not seen in the last 16 MiB")
	}
	if !ask(ref, head) {
		t.Error("the first 16 MiB are reported written after a write at 60 MiB only")
	}
	clone := ref
	clone.Name += "-clone"
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(rbd.ImageOptionFeatures, rbd.FeatureLayering); err != nil {
		t.Fatal(err)
	}
	if err := rbd.CloneImage(io, ref.Name, "base", io, clone.Name, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbd.RemoveImage(io, clone.Name)
		if img, err := rbd.OpenImage(io, ref.Name, rbd.NoSnapshot); err == nil {
			s := img.GetSnapshot("base")
			_ = s.Unprotect()
			_ = s.Remove()
			_ = img.Close()
		}
	})
	if ask(clone, head) {
		t.Error("a clone, whose unwritten objects read from its parent, is reported unwritten")
	}
}
