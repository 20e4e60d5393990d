// Package backendtest is the contract every ceph.Backend keeps: one suite
// run against cephfake always and against librbd when a Ceph cluster is
// available, so that the fake the driver's unit tests rely on cannot drift
// from the real thing.
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Env is a backend under test and what it needs to reach its cluster.
type Env struct {
	Backend ceph.Backend
	Creds   ceph.Credentials
	Cluster ceph.Cluster
	// Pool exists and may hold the suite's images (named contract-*).
	Pool string
	// WrongKey is a well-formed cephx key the cluster does not accept for
	// Creds.User.
	WrongKey string
}

// callTimeout bounds each call; a real cluster answers well within it.
const callTimeout = 60 * time.Second

// Run runs the contract against env.
func Run(t *testing.T, env Env) {
	c := &contract{Env: env, prefix: "contract-" + randomSuffix(t) + "-"}
	t.Run("CreateImageThenStatImage", c.createThenStat)
	t.Run("CreateImageOnATakenNameIsErrExistsAndLeavesTheImage", c.createTaken)
	t.Run("StatImageOfAMissingImageIsErrNotFound", c.statMissing)
	t.Run("SetMetadataKeepsOtherKeys", c.setMetadata)
	t.Run("ReadHeaderMatchesStatImageOverManyKeys", c.readHeader)
	t.Run("ReadHeaderOfAMissingImageIsErrNotFound", c.readHeaderMissing)
	t.Run("ResizeImageGrows", c.resize)
	t.Run("ListImagesIsSortedAndHoldsTheImages", c.listImages)
	t.Run("ListImageIDsAndMetadataByIDMatchStatImage", c.listImageIDs)
	t.Run("TrashImageThenPurge", c.trashThenPurge)
	t.Run("TrashImageOfAMissingImageIsErrNotFound", c.trashMissing)
	t.Run("RemovePartialImageOfNothingIsErrNotFound", c.removePartialNothing)
	t.Run("PoolIDAndPoolNameRoundTrip", c.poolIDs)
	t.Run("RBDPoolsHoldsTheTestPool", c.rbdPools)
	t.Run("WatchersOfAnImageNobodyOpenedIsEmpty", c.noWatchers)
	t.Run("SnapshotsCreateStatListRemove", c.snapshots)
	t.Run("CloneReadsThroughItsParentUntilFlattened", c.clone)
	t.Run("CloneErrors", c.cloneErrors)
	t.Run("RemovedSnapshotKeepsItsClones", c.removeSnapWithClone)
	t.Run("WrongKeyIsErrAuth", c.wrongKey)
	t.Run("AttachRecordCreateSwapRemove", c.attachRecordLifecycle)
	t.Run("AttachRecordConcurrentSwapsExactlyOneWins", c.attachRecordSwapsRace)
	t.Run("BlocklistOfAnUnusedAddressSucceeds", c.blocklistUnusedAddress)
}

type contract struct {
	Env
	prefix string
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (c *contract) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (c *contract) ref(name string) ceph.ImageRef {
	return ceph.ImageRef{Cluster: c.Cluster, Pool: c.Pool, Name: c.prefix + name}
}

// create makes an image and removes it (and its trash entry) after the test.
func (c *contract) create(t *testing.T, name string, spec ceph.ImageSpec) ceph.ImageRef {
	t.Helper()
	ref := c.ref(name)
	if err := c.Backend.CreateImage(c.ctx(t), c.Creds, ref, spec); err != nil {
		t.Fatalf("CreateImage %s: %v", ref, err)
	}
	t.Cleanup(func() { c.remove(t, ref) })
	return ref
}

// remove trashes and purges ref, best effort: clones are removed first by
// their own cleanups (registered later, so run earlier).
func (c *contract) remove(t *testing.T, ref ceph.ImageRef) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if snaps, err := c.Backend.ListSnaps(ctx, c.Creds, ref); err == nil {
		for _, s := range snaps {
			_ = c.Backend.RemoveSnap(ctx, c.Creds, ref, s)
		}
	}
	ids, err := c.Backend.TrashImage(ctx, c.Creds, ref)
	if err != nil {
		if !errors.Is(err, ceph.ErrNotFound) {
			t.Logf("cleanup: trash %s: %v", ref, err)
		}
		return
	}
	for _, id := range ids {
		if err := c.Backend.PurgeTrash(ctx, c.Creds, c.Cluster, c.Pool, id, false); err != nil && !errors.Is(err, ceph.ErrNotFound) {
			t.Logf("cleanup: purge %s (%s): %v", ref, id, err)
		}
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want an error matching %v", what, err, target)
	}
}

func (c *contract) stat(t *testing.T, ref ceph.ImageRef) ceph.ImageInfo {
	t.Helper()
	info, err := c.Backend.StatImage(c.ctx(t), c.Creds, ref)
	if err != nil {
		t.Fatalf("StatImage %s: %v", ref, err)
	}
	return info
}

func (c *contract) createThenStat(t *testing.T) {
	md := map[string]string{"rbd-csi.test": "v1"}
	ref := c.create(t, "stat", ceph.ImageSpec{Size: 64 << 20, Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock, Metadata: md})
	info := c.stat(t, ref)
	if info.Name != ref.Name || info.ID == "" || info.Size != 64<<20 || info.Parent != nil {
		t.Errorf("StatImage = name %q id %q size %d parent %v; want %q, an ID, %d, no parent", info.Name, info.ID, info.Size, info.Parent, ref.Name, 64<<20)
	}
	if got := info.Features & ceph.UserFeatures; got != ceph.FeatureLayering|ceph.FeatureExclusiveLock {
		t.Errorf("features %s, want layering,exclusive-lock", got)
	}
	if info.Metadata["rbd-csi.test"] != "v1" {
		t.Errorf("metadata %v, want rbd-csi.test=v1", info.Metadata)
	}
}

func (c *contract) createTaken(t *testing.T) {
	ref := c.create(t, "taken", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	err := c.Backend.CreateImage(c.ctx(t), c.Creds, ref, ceph.ImageSpec{Size: 64 << 20, Features: ceph.FeatureLayering})
	wantErr(t, "second CreateImage", err, ceph.ErrExists)
	if info := c.stat(t, ref); info.Size != 32<<20 {
		t.Errorf("size %d after a refused create, want the first image's %d", info.Size, 32<<20)
	}
}

func (c *contract) statMissing(t *testing.T) {
	_, err := c.Backend.StatImage(c.ctx(t), c.Creds, c.ref("missing"))
	wantErr(t, "StatImage", err, ceph.ErrNotFound)
}

func (c *contract) setMetadata(t *testing.T) {
	ref := c.create(t, "meta", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{"a": "1"}})
	if err := c.Backend.SetMetadata(c.ctx(t), c.Creds, ref, map[string]string{"b": "2"}); err != nil {
		t.Fatal(err)
	}
	got := c.stat(t, ref).Metadata
	if want := map[string]string{"a": "1", "b": "2"}; !maps.Equal(got, want) {
		t.Errorf("metadata %v, want %v", got, want)
	}
	for range 2 { // the second removal finds nothing: still success
		if err := c.Backend.RemoveMetadata(c.ctx(t), c.Creds, ref, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := c.stat(t, ref).Metadata, map[string]string{"b": "2"}; !maps.Equal(got, want) {
		t.Errorf("metadata after removing a: %v, want %v", got, want)
	}
	err := c.Backend.RemoveMetadata(c.ctx(t), c.Creds, c.ref("missing"), "a")
	wantErr(t, "RemoveMetadata", err, ceph.ErrNotFound)
}

func (c *contract) readHeader(t *testing.T) {
	// More keys than one read returns, so that paging is exercised.
	md := make(map[string]string, 300)
	for i := range 300 {
		md[fmt.Sprintf("rbd-csi.k%03d", i)] = fmt.Sprintf("v%d", i)
	}
	spec := ceph.ImageSpec{Size: 48 << 20, Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock, Metadata: md}
	ref := c.create(t, "readheader", spec)
	got, err := c.Backend.ReadHeader(c.ctx(t), c.Creds, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.Metadata, md) {
		t.Errorf("ReadHeader returned %d image-meta keys, want the %d written", len(got.Metadata), len(md))
	}
	stat := c.stat(t, ref)
	if !maps.Equal(got.Metadata, stat.Metadata) {
		t.Errorf("ReadHeader and StatImage disagree: %d and %d image-meta keys", len(got.Metadata), len(stat.Metadata))
	}
	want := ceph.ImageHeader{ID: stat.ID, Size: spec.Size, Features: stat.Features, Metadata: got.Metadata, ClusterFSID: stat.ClusterFSID}
	if got.ID != want.ID || got.Size != want.Size || got.Features != want.Features || got.ClusterFSID != want.ClusterFSID {
		t.Errorf("ReadHeader = id %q size %d features %#x fsid %q; StatImage says id %q size %d features %#x fsid %q",
			got.ID, got.Size, uint64(got.Features), got.ClusterFSID, want.ID, want.Size, uint64(want.Features), want.ClusterFSID)
	}
	plain := c.create(t, "readheader-none", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	if got, err := c.Backend.ReadHeader(c.ctx(t), c.Creds, plain); err != nil || len(got.Metadata) != 0 || got.Size != 32<<20 {
		t.Errorf("ReadHeader of an image without image-meta = %+v, %v; want no keys and 32 MiB", got, err)
	}
}

func (c *contract) readHeaderMissing(t *testing.T) {
	_, err := c.Backend.ReadHeader(c.ctx(t), c.Creds, c.ref("missing"))
	wantErr(t, "ReadHeader", err, ceph.ErrNotFound)
}

func (c *contract) resize(t *testing.T) {
	ref := c.create(t, "grow", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	if err := c.Backend.ResizeImage(c.ctx(t), c.Creds, ref, 96<<20); err != nil {
		t.Fatal(err)
	}
	if size := c.stat(t, ref).Size; size != 96<<20 {
		t.Errorf("size %d after ResizeImage, want %d", size, 96<<20)
	}
}

func (c *contract) listImages(t *testing.T) {
	a := c.create(t, "list-b", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	b := c.create(t, "list-a", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	names, err := c.Backend.ListImages(c.ctx(t), c.Creds, c.Cluster, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(names) {
		t.Errorf("ListImages not sorted: %v", names)
	}
	for _, ref := range []ceph.ImageRef{a, b} {
		if !slices.Contains(names, ref.Name) {
			t.Errorf("ListImages lacks %s", ref.Name)
		}
	}
}

func (c *contract) listImageIDs(t *testing.T) {
	md := map[string]string{"rbd-csi.test": "value"}
	a := c.create(t, "ids-b", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering, Metadata: md})
	b := c.create(t, "ids-a", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	entries, err := c.Backend.ListImageIDs(c.ctx(t), c.Creds, c.Cluster, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(entries, func(x, y ceph.ImageEntry) int { return strings.Compare(x.Name, y.Name) }) {
		t.Errorf("ListImageIDs not sorted by name: %v", entries)
	}
	for _, ref := range []ceph.ImageRef{a, b} {
		want := ceph.ImageEntry{Name: ref.Name, ID: c.stat(t, ref).ID}
		if !slices.Contains(entries, want) {
			t.Errorf("ListImageIDs lacks %+v: %v", want, entries)
		}
	}
	ids := []string{c.stat(t, a).ID, c.stat(t, b).ID, "no-such-image-id"}
	got, err := c.Backend.MetadataByID(c.ctx(t), c.Creds, c.Cluster, c.Pool, "rbd-csi.test", ids)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{ids[0]: "value"}; !maps.Equal(got, want) {
		t.Errorf("MetadataByID = %v, want %v (only the image that has the key)", got, want)
	}
}

func (c *contract) rbdPools(t *testing.T) {
	pools, err := c.Backend.RBDPools(c.ctx(t), c.Creds, c.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(pools) || !slices.Contains(pools, c.Pool) {
		t.Errorf("RBDPools = %v, want a sorted list holding %s", pools, c.Pool)
	}
}

func (c *contract) trashThenPurge(t *testing.T) {
	ref := c.create(t, "trash", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	id := c.stat(t, ref).ID
	ids, err := c.Backend.TrashImage(c.ctx(t), c.Creds, ref)
	if err != nil || !slices.Equal(ids, []string{id}) {
		t.Fatalf("TrashImage = %v, %v; want [%s]", ids, err, id)
	}
	_, err = c.Backend.StatImage(c.ctx(t), c.Creds, ref)
	wantErr(t, "StatImage of a trashed image", err, ceph.ErrNotFound)
	again, err := c.Backend.TrashImage(c.ctx(t), c.Creds, ref)
	if err != nil || !slices.Contains(again, id) {
		t.Fatalf("TrashImage again = %v, %v; want the IDs under the name, %s among them", again, err, id)
	}
	if e, ok := c.trashEntry(t, id); !ok || e.Name != ref.Name {
		t.Fatalf("ListTrash entry %s = %+v (found %v), want name %s", id, e, ok, ref.Name)
	}
	if err := c.Backend.PurgeTrash(c.ctx(t), c.Creds, c.Cluster, c.Pool, id, false); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.trashEntry(t, id); ok {
		t.Errorf("trash entry %s still listed after PurgeTrash", id)
	}
	err = c.Backend.PurgeTrash(c.ctx(t), c.Creds, c.Cluster, c.Pool, id, false)
	wantErr(t, "PurgeTrash of a purged entry", err, ceph.ErrNotFound)
}

func (c *contract) trashEntry(t *testing.T, id string) (ceph.TrashEntry, bool) {
	t.Helper()
	entries, err := c.Backend.ListTrash(c.ctx(t), c.Creds, c.Cluster, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.ID == id {
			return e, true
		}
	}
	return ceph.TrashEntry{}, false
}

func (c *contract) trashMissing(t *testing.T) {
	_, err := c.Backend.TrashImage(c.ctx(t), c.Creds, c.ref("never-made"))
	wantErr(t, "TrashImage", err, ceph.ErrNotFound)
}

func (c *contract) removePartialNothing(t *testing.T) {
	err := c.Backend.RemovePartialImage(c.ctx(t), c.Creds, c.ref("never-made"))
	wantErr(t, "RemovePartialImage", err, ceph.ErrNotFound)
}

func (c *contract) poolIDs(t *testing.T) {
	id, err := c.Backend.PoolID(c.ctx(t), c.Creds, c.Cluster, c.Pool)
	if err != nil {
		t.Fatal(err)
	}
	name, err := c.Backend.PoolName(c.ctx(t), c.Creds, c.Cluster, id)
	if err != nil || name != c.Pool {
		t.Fatalf("PoolName(%d) = %q, %v; want %q", id, name, err, c.Pool)
	}
	_, err = c.Backend.PoolID(c.ctx(t), c.Creds, c.Cluster, c.prefix+"no-such-pool")
	wantErr(t, "PoolID of a missing pool", err, ceph.ErrNotFound)
	_, err = c.Backend.PoolName(c.ctx(t), c.Creds, c.Cluster, 1<<40)
	wantErr(t, "PoolName of a missing pool", err, ceph.ErrNotFound)
}

func (c *contract) noWatchers(t *testing.T) {
	ref := c.create(t, "watch", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	ws, err := c.Backend.Watchers(c.ctx(t), c.Creds, ref)
	if err != nil || len(ws) != 0 {
		t.Fatalf("Watchers = %v, %v; want none", ws, err)
	}
}

func (c *contract) snapshots(t *testing.T) {
	ref := c.create(t, "snaps", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{"rbd-csi.test": "snaps"}})
	first, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, ref, "s1", ceph.MeasureDepth)
	if err != nil {
		t.Fatal(err)
	}
	if first.Name != "s1" || first.Size != 32<<20 || first.Depth != 0 {
		t.Errorf("CreateSnap = %+v, want name s1, size %d, depth 0", first, 32<<20)
	}
	again, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, ref, "s1", ceph.MeasureDepth)
	if err != nil || again.ID != first.ID {
		t.Errorf("CreateSnap again = %+v, %v; want the same snapshot (ID %d)", again, err, first.ID)
	}
	stat, err := c.Backend.StatSnap(c.ctx(t), c.Creds, ref, "s1")
	if err != nil || stat.ID != first.ID || stat.Size != first.Size {
		t.Errorf("StatSnap = %+v, %v; want %+v", stat, err, first)
	}
	if got := stat.ImageMetadata["rbd-csi.test"]; got != "snaps" {
		t.Errorf("StatSnap's image metadata = %v; want rbd-csi.test=snaps", stat.ImageMetadata)
	}
	names, err := c.Backend.ListSnaps(c.ctx(t), c.Creds, ref)
	if err != nil || !slices.Equal(names, []string{"s1"}) {
		t.Errorf("ListSnaps = %v, %v; want [s1]", names, err)
	}
	if err := c.Backend.RemoveSnap(c.ctx(t), c.Creds, ref, "s1"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Backend.StatSnap(c.ctx(t), c.Creds, ref, "s1")
	wantErr(t, "StatSnap of a removed snapshot", err, ceph.ErrNotFound)
	err = c.Backend.RemoveSnap(c.ctx(t), c.Creds, ref, "s1")
	wantErr(t, "RemoveSnap of a removed snapshot", err, ceph.ErrNotFound)
	_, err = c.Backend.ListSnaps(c.ctx(t), c.Creds, c.ref("never-made"))
	wantErr(t, "ListSnaps of a missing image", err, ceph.ErrNotFound)
}

func (c *contract) clone(t *testing.T) {
	// The parent's metadata is copied (a snapshot image keeps its volume's
	// wrapped key that way); the spec's is written over it.
	parent := c.create(t, "parent", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering, Metadata: map[string]string{"rbd-csi.inherited": "parent", "rbd-csi.test": "parent"}})
	if _, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, parent, "base", ceph.MeasureDepth); err != nil {
		t.Fatal(err)
	}
	child := c.ref("child")
	spec := ceph.CloneSpec{Features: ceph.FeatureLayering, Metadata: map[string]string{"rbd-csi.test": "clone"}}
	if err := c.Backend.CloneImage(c.ctx(t), c.Creds, parent, "base", child, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.remove(t, child) })
	info := c.stat(t, child)
	if p := info.Parent; p == nil || p.Pool != c.Pool || p.Image != parent.Name || p.Snap != "base" || p.InTrash {
		t.Fatalf("clone's parent %+v, want %s/%s@base", p, c.Pool, parent.Name)
	}
	if info.Size != 32<<20 || info.Metadata["rbd-csi.test"] != "clone" || info.Metadata["rbd-csi.inherited"] != "parent" {
		t.Errorf("clone size %d metadata %v, want the parent's size and metadata, the spec's over it", info.Size, info.Metadata)
	}
	if d, err := c.Backend.CloneDepth(c.ctx(t), c.Creds, child); err != nil || d != 1 {
		t.Errorf("CloneDepth = %d, %v; want 1", d, err)
	}
	for _, tc := range []struct {
		snap  string
		walk  ceph.DepthWalk
		depth int
	}{{"measured", ceph.MeasureDepth, 1}, {"skipped", ceph.SkipDepth, -1}} {
		if s, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, child, tc.snap, tc.walk); err != nil || s.Depth != tc.depth {
			t.Errorf("CreateSnap of the clone, depth %v = depth %d, %v; want %d", tc.walk, s.Depth, err, tc.depth)
		}
		if err := c.Backend.RemoveSnap(c.ctx(t), c.Creds, child, tc.snap); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Backend.FlattenImage(c.ctx(t), c.Creds, child, false); err != nil {
		t.Fatal(err)
	}
	if p := c.stat(t, child).Parent; p != nil {
		t.Errorf("parent %+v after FlattenImage, want none", p)
	}
	if d, err := c.Backend.CloneDepth(c.ctx(t), c.Creds, child); err != nil || d != 0 {
		t.Errorf("CloneDepth after flatten = %d, %v; want 0", d, err)
	}
	if err := c.Backend.FlattenImage(c.ctx(t), c.Creds, child, false); err != nil {
		t.Errorf("FlattenImage of an image without parent: %v, want success", err)
	}
}

func (c *contract) cloneErrors(t *testing.T) {
	parent := c.create(t, "parent2", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	taken := c.create(t, "taken2", ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering})
	if _, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, parent, "base", ceph.MeasureDepth); err != nil {
		t.Fatal(err)
	}
	spec := ceph.CloneSpec{Features: ceph.FeatureLayering}
	err := c.Backend.CloneImage(c.ctx(t), c.Creds, parent, "base", taken, spec)
	wantErr(t, "CloneImage onto a taken name", err, ceph.ErrExists)
	if info := c.stat(t, taken); info.Parent != nil || info.Size != 16<<20 {
		t.Errorf("the taken image changed: parent %+v size %d", info.Parent, info.Size)
	}
	err = c.Backend.CloneImage(c.ctx(t), c.Creds, parent, "no-such-snap", c.ref("orphan"), spec)
	wantErr(t, "CloneImage of a missing snapshot", err, ceph.ErrNotFound)
	err = c.Backend.CloneImage(c.ctx(t), c.Creds, c.ref("never-made"), "base", c.ref("orphan"), spec)
	wantErr(t, "CloneImage of a missing parent", err, ceph.ErrNotFound)
	if _, err := c.Backend.StatImage(c.ctx(t), c.Creds, c.ref("orphan")); !errors.Is(err, ceph.ErrNotFound) {
		t.Errorf("a refused clone left an image: %v", err)
	}
}

func (c *contract) removeSnapWithClone(t *testing.T) {
	parent := c.create(t, "parent3", ceph.ImageSpec{Size: 32 << 20, Features: ceph.FeatureLayering})
	if _, err := c.Backend.CreateSnap(c.ctx(t), c.Creds, parent, "base", ceph.MeasureDepth); err != nil {
		t.Fatal(err)
	}
	child := c.ref("child3")
	if err := c.Backend.CloneImage(c.ctx(t), c.Creds, parent, "base", child, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.remove(t, child) })
	if err := c.Backend.RemoveSnap(c.ctx(t), c.Creds, parent, "base"); err != nil {
		t.Fatalf("RemoveSnap of a snapshot a clone reads through: %v, want success (it moves to the trash namespace)", err)
	}
	if names, err := c.Backend.ListSnaps(c.ctx(t), c.Creds, parent); err != nil || len(names) != 0 {
		t.Errorf("ListSnaps = %v, %v; want none in the user namespace", names, err)
	}
	if p := c.stat(t, child).Parent; p == nil || p.Image != parent.Name {
		t.Errorf("clone's parent %+v after its snapshot was removed, want %s", p, parent.Name)
	}
	if d, err := c.Backend.CloneDepth(c.ctx(t), c.Creds, child); err != nil || d != 1 {
		t.Errorf("CloneDepth = %d, %v; want 1", d, err)
	}
}

func (c *contract) wrongKey(t *testing.T) {
	bad := ceph.Credentials{User: c.Creds.User, Key: c.WrongKey}
	_, err := c.Backend.PoolID(c.ctx(t), bad, c.Cluster, c.Pool)
	wantErr(t, "PoolID with a wrong key", err, ceph.ErrAuth)
}
