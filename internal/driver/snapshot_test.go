package driver

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

func mustCreate(t *testing.T, d *testDriver, req *csi.CreateVolumeRequest) *csi.Volume {
	t.Helper()
	resp, err := d.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", req.GetName(), err)
	}
	return resp.GetVolume()
}

func snapReq(name, source string) *csi.CreateSnapshotRequest {
	return &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: source, Secrets: secrets()}
}

func mustSnapshot(t *testing.T, d *testDriver, name, source string) *csi.Snapshot {
	t.Helper()
	resp, err := d.CreateSnapshot(context.Background(), snapReq(name, source))
	if err != nil {
		t.Fatalf("CreateSnapshot %s: %v", name, err)
	}
	return resp.GetSnapshot()
}

func fromSnapshot(name, snapID string, size int64) *csi.CreateVolumeRequest {
	r := createReq(name, size, nil)
	r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID}}}
	return r
}

func fromVolume(name, volID string, size int64) *csi.CreateVolumeRequest {
	r := createReq(name, size, nil)
	r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: volID}}}
	return r
}

func ref(name string) ceph.ImageRef {
	return ceph.ImageRef{Cluster: ceph.Cluster{ID: clusterID, Monitors: []string{"127.0.0.1:6789"}}, Pool: testPool, Name: name}
}

func TestCreateSnapshotIsIdempotentAndLeavesNoTempSnapshot(t *testing.T) {
	d, fake := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	first := mustSnapshot(t, d, "snap-a", vol.VolumeId)
	again := mustSnapshot(t, d, "snap-a", vol.VolumeId)
	if first.SnapshotId != again.SnapshotId || !again.ReadyToUse || again.SizeBytes != 1<<30 || again.CreationTime == nil {
		t.Fatalf("first %v, again %v", first, again)
	}
	if !first.CreationTime.AsTime().Equal(again.CreationTime.AsTime()) {
		t.Errorf("creation time changed on retry: %v then %v", first.CreationTime.AsTime(), again.CreationTime.AsTime())
	}
	src := vol.VolumeContext["imageName"]
	if snaps := fake.Snapshots(ref(src)); len(snaps) != 0 {
		t.Errorf("source keeps snapshots %v", snaps)
	}
	if got := fake.Images(testPool); len(got) != 2 {
		t.Errorf("images %v, want the volume and one snapshot image", got)
	}
}

func TestCreateSnapshotRejects(t *testing.T) {
	d, _ := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	other := mustCreate(t, d, createReq("pvc-b", 1<<30, nil))
	mustSnapshot(t, d, "taken", vol.VolumeId)
	tests := []struct {
		name string
		req  *csi.CreateSnapshotRequest
		code codes.Code
		msg  string
	}{
		{"no name", snapReq("", vol.VolumeId), codes.InvalidArgument, "name"},
		{"no source", snapReq("s", ""), codes.InvalidArgument, "source_volume_id"},
		{"foreign source", snapReq("s", "not-ours"), codes.NotFound, "not-ours"},
		{"missing source", snapReq("s", strings.Replace(vol.VolumeId, "csi-vol-", "csi-vol-0", 1)), codes.NotFound, "does not exist"},
		{"same name other source", snapReq("taken", other.VolumeId), codes.AlreadyExists, "source volume"},
		{"unknown parameter", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: vol.VolumeId, Secrets: secrets(), Parameters: map[string]string{"snapshotFlavour": "x"}}, codes.InvalidArgument, "snapshotFlavour"},
		{"other cluster", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: vol.VolumeId, Secrets: secrets(), Parameters: map[string]string{"clusterID": "c2"}}, codes.InvalidArgument, "clusterID"},
		{"no secrets", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: vol.VolumeId}, codes.InvalidArgument, "userID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.CreateSnapshot(context.Background(), tc.req)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestCreateSnapshotFinishesInterruptedAttempts(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, fake *cephfake.Backend, src, snapImage string)
	}{
		{"temporary snapshot taken, no clone", func(t *testing.T, fake *cephfake.Backend, src, snapImage string) {
			if _, err := fake.CreateSnap(context.Background(), adminCreds(), ref(src), params.TempSnapName(snapImage), ceph.MeasureDepth); err != nil {
				t.Fatal(err)
			}
		}},
		{"clone without owner record", func(t *testing.T, fake *cephfake.Backend, src, snapImage string) {
			if _, err := fake.CreateSnap(context.Background(), adminCreds(), ref(src), params.TempSnapName(snapImage), ceph.MeasureDepth); err != nil {
				t.Fatal(err)
			}
			if err := fake.CloneImage(context.Background(), adminCreds(), ref(src), params.TempSnapName(snapImage), ref(snapImage), ceph.CloneSpec{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
			src := vol.VolumeContext["imageName"]
			snapImage := params.SnapshotImageName("test", "snap-a")
			tc.setup(t, fake, src, snapImage)
			s := mustSnapshot(t, d, "snap-a", vol.VolumeId)
			if !s.ReadyToUse {
				t.Errorf("not ready: %v", s)
			}
			if snaps := fake.Snapshots(ref(src)); len(snaps) != 0 {
				t.Errorf("source keeps snapshots %v", snaps)
			}
			if got := fake.Snapshots(ref(snapImage)); len(got) != 1 || got[0] != snapName {
				t.Errorf("snapshot image has snapshots %v, want [%s]", got, snapName)
			}
		})
	}
}

func adminCreds() ceph.Credentials { return ceph.Credentials{User: "admin", Key: testKey} }

func TestRestoreAndCloneTakeTheSourceSizeAndGrowOnRequest(t *testing.T) {
	d, _ := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	snap := mustSnapshot(t, d, "snap-a", vol.VolumeId)
	tests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		size int64
		code codes.Code
	}{
		{"restore, no size", fromSnapshot("r1", snap.SnapshotId, 0), 1 << 30, codes.OK},
		{"restore, larger", fromSnapshot("r2", snap.SnapshotId, 2<<30), 2 << 30, codes.OK},
		{"clone, no size", fromVolume("c1", vol.VolumeId, 0), 1 << 30, codes.OK},
		{"clone, larger", fromVolume("c2", vol.VolumeId, 3<<30), 3 << 30, codes.OK},
		{"restore, missing snapshot", fromSnapshot("r3", strings.Replace(snap.SnapshotId, "csi-snap-", "csi-snap-0", 1), 0), 0, codes.NotFound},
		{"restore, volume ID as snapshot", fromSnapshot("r4", vol.VolumeId, 0), 0, codes.NotFound},
		{"clone, snapshot ID as volume", fromVolume("c3", snap.SnapshotId, 0), 0, codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := d.CreateVolume(context.Background(), tc.req)
			wantCode(t, err, tc.code)
			if err != nil {
				return
			}
			if resp.Volume.CapacityBytes != tc.size || resp.Volume.ContentSource == nil {
				t.Errorf("capacity %d (want %d), content source %v", resp.Volume.CapacityBytes, tc.size, resp.Volume.ContentSource)
			}
			again, err := d.CreateVolume(context.Background(), tc.req)
			if err != nil || again.Volume.VolumeId != resp.Volume.VolumeId {
				t.Errorf("retry: %v, %v", again, err)
			}
		})
	}
}

func TestCloneWithAnotherSourceUnderTheSameNameIsAlreadyExists(t *testing.T) {
	d, _ := newTestDriver(t)
	a := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	b := mustCreate(t, d, createReq("pvc-b", 1<<30, nil))
	mustCreate(t, d, fromVolume("copy", a.VolumeId, 0))
	_, err := d.CreateVolume(context.Background(), fromVolume("copy", b.VolumeId, 0))
	wantCode(t, err, codes.AlreadyExists, "content source")
}

func TestDeleteSourceFirstKeepsDependentsAndReclaimsLast(t *testing.T) {
	d, fake := newTestDriver(t)
	fake.Mgr = false // purges run in the driver: the test sees them finish
	d.purger.retryAfter = 10 * time.Millisecond
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	snap := mustSnapshot(t, d, "snap-a", vol.VolumeId)
	restored := mustCreate(t, d, fromSnapshot("restored", snap.SnapshotId, 0))
	ctx := context.Background()
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	// Both purges are refused, retried every 10 ms, and stay pending for
	// the metrics while they wait.
	time.Sleep(50 * time.Millisecond)
	if got := fake.Trash(testPool); len(got) != 2 {
		t.Fatalf("trash %v: the source and the snapshot image must wait for the restored volume", got)
	}
	if n := d.PurgeQueueLength(); n != 2 {
		t.Errorf("purge queue length %d while two purges wait for the restored volume, want 2", n)
	}
	if got := fake.Images(testPool); len(got) != 1 || got[0] != restored.VolumeContext["imageName"] {
		t.Fatalf("images %v, want only the restored volume", got)
	}
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: restored.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	// The blocked purges are retried by the driver until they succeed.
	deadline := time.Now().Add(5 * time.Second)
	for len(fake.Trash(testPool)) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := fake.Trash(testPool); len(got) != 0 {
		t.Errorf("trash %v once nothing depends on it", got)
	}
	for i := 0; i < 1000 && d.PurgeQueueLength() > 0; i++ {
		time.Sleep(time.Millisecond)
	}
	if n := d.PurgeQueueLength(); n != 0 {
		t.Errorf("purge queue length %d after the purges, want 0", n)
	}
}

func TestChainDeeperThanTheBoundIsFlattened(t *testing.T) {
	d, fake := newTestDriver(t)
	d.opts.MaxCloneDepth = 2
	ctx := context.Background()
	vol := mustCreate(t, d, createReq("gen-0", 1<<30, nil))
	snap := mustSnapshot(t, d, "snap-0", vol.VolumeId) // depth 1
	// restore: depth 2, at the bound
	r1 := mustCreate(t, d, fromSnapshot("gen-1", snap.SnapshotId, 0))
	// snapshot of the restore: depth 3, over the bound: flattened, not ready
	resp, err := d.CreateSnapshot(ctx, snapReq("snap-1", r1.VolumeId))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Snapshot.ReadyToUse {
		t.Fatal("a snapshot over the depth bound is ready before its flatten")
	}
	_, err = d.CreateVolume(ctx, fromSnapshot("gen-2", resp.Snapshot.SnapshotId, 0))
	wantCode(t, err, codes.Aborted, "flattened")
	fake.FinishFlattens()
	resp, err = d.CreateSnapshot(ctx, snapReq("snap-1", r1.VolumeId))
	if err != nil || !resp.Snapshot.ReadyToUse {
		t.Fatalf("after the flatten: %v, %v", resp, err)
	}
	r2 := mustCreate(t, d, fromSnapshot("gen-2", resp.Snapshot.SnapshotId, 0))
	depth, err := fake.CloneDepth(ctx, adminCreds(), ref(r2.VolumeContext["imageName"]))
	if err != nil || depth != 1 {
		t.Errorf("depth of the new restore = %d, %v; want 1", depth, err)
	}
}

// A clone over the depth bound is Aborted until it is flattened: by a
// ceph-mgr task where a mgr runs, else by the driver in the background
// (counted in the flatten gauge while it runs).
func TestCloneOverTheBoundIsAbortedUntilFlattened(t *testing.T) {
	tests := []struct {
		name   string
		mgr    bool
		finish func(t *testing.T, d *testDriver, fake *cephfake.Backend)
	}{
		{"the mgr's task flattens it", true, func(_ *testing.T, _ *testDriver, fake *cephfake.Backend) { fake.FinishFlattens() }},
		{"without a mgr the driver flattens it", false, func(t *testing.T, d *testDriver, _ *cephfake.Backend) {
			for i := 0; i < 1000 && d.FlattenQueueLength() > 0; i++ {
				time.Sleep(time.Millisecond)
			}
			if n := d.FlattenQueueLength(); n != 0 {
				t.Fatalf("%d local flattens still running", n)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			fake.Mgr = tc.mgr
			d.opts.MaxCloneDepth = 1
			ctx := context.Background()
			vol := mustCreate(t, d, createReq("gen-0", 1<<30, nil))
			c1 := mustCreate(t, d, fromVolume("gen-1", vol.VolumeId, 0)) // depth 1
			_, err := d.CreateVolume(ctx, fromVolume("gen-2", c1.VolumeId, 0))
			wantCode(t, err, codes.Aborted, "retry")
			tc.finish(t, d, fake)
			c2 := mustCreate(t, d, fromVolume("gen-2", c1.VolumeId, 0))
			depth, err := fake.CloneDepth(ctx, adminCreds(), ref(c2.VolumeContext["imageName"]))
			if err != nil || depth != 0 {
				t.Errorf("depth of the flattened clone = %d, %v; want 0", depth, err)
			}
		})
	}
}

func TestListSnapshotsFiltersAndPaginates(t *testing.T) {
	d, _ := newTestDriver(t)
	a := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	b := mustCreate(t, d, createReq("pvc-b", 1<<30, nil))
	s1 := mustSnapshot(t, d, "s1", a.VolumeId)
	mustSnapshot(t, d, "s2", a.VolumeId)
	mustSnapshot(t, d, "s3", b.VolumeId)
	ctx := context.Background()
	tests := []struct {
		name string
		req  *csi.ListSnapshotsRequest
		want int
	}{
		{"all", &csi.ListSnapshotsRequest{}, 3},
		{"by source", &csi.ListSnapshotsRequest{SourceVolumeId: a.VolumeId}, 2},
		{"by ID", &csi.ListSnapshotsRequest{SnapshotId: s1.SnapshotId}, 1},
		{"by ID and other source", &csi.ListSnapshotsRequest{SnapshotId: s1.SnapshotId, SourceVolumeId: b.VolumeId}, 0},
		{"by unknown ID", &csi.ListSnapshotsRequest{SnapshotId: "nope"}, 0},
		{"by unknown source", &csi.ListSnapshotsRequest{SourceVolumeId: "nope"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := d.ListSnapshots(ctx, tc.req)
			if err != nil || len(resp.Entries) != tc.want {
				t.Fatalf("got %v, %v; want %d entries", resp, err, tc.want)
			}
		})
	}
	seen := map[string]bool{}
	tok := ""
	for page := 0; page < 5; page++ {
		resp, err := d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Entries {
			seen[e.Snapshot.SnapshotId] = true
		}
		if tok = resp.NextToken; tok == "" {
			break
		}
	}
	if len(seen) != 3 {
		t.Errorf("pages gave %d distinct snapshots, want 3", len(seen))
	}
	vols, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(vols.Entries) != 2 {
		t.Errorf("ListVolumes = %v, %v; snapshot images must not be listed as volumes", vols, err)
	}
}

func TestDeleteSnapshotIsIdempotentAndIgnoresForeignIDs(t *testing.T) {
	d, fake := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	snap := mustSnapshot(t, d, "s1", vol.VolumeId)
	ctx := context.Background()
	for _, id := range []string{snap.SnapshotId, snap.SnapshotId, "foreign", vol.VolumeId, vol.VolumeId + "@csi-snap"} {
		if _, err := d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: secrets()}); err != nil {
			t.Fatalf("DeleteSnapshot(%q): %v", id, err)
		}
	}
	if got := fake.Images(testPool); len(got) != 1 || got[0] != vol.VolumeContext["imageName"] {
		t.Errorf("images %v: the volume must survive snapshot deletes naming it", got)
	}
	_, err := d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: snap.SnapshotId, Secrets: secrets()})
	wantCode(t, err, codes.NotFound)
}

func TestSnapshotCephFailuresKeepTheirCodes(t *testing.T) {
	d, fake := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
	fake.Fail = func(op string, _ ceph.ImageRef) error {
		if op == "clone" {
			return ceph.ErrUnavailable
		}
		return nil
	}
	_, err := d.CreateSnapshot(context.Background(), snapReq("s1", vol.VolumeId))
	wantCode(t, err, codes.Unavailable)
	fake.Fail = nil
	if s := mustSnapshot(t, d, "s1", vol.VolumeId); !s.ReadyToUse {
		t.Errorf("retry not ready: %v", s)
	}
}

func TestFailedCloneLeavesNoTemporarySnapshotOnTheSource(t *testing.T) {
	tests := []struct {
		name string
		call func(d *testDriver, vol *csi.Volume) error
	}{
		{"snapshot", func(d *testDriver, vol *csi.Volume) error {
			_, err := d.CreateSnapshot(context.Background(), snapReq("s1", vol.VolumeId))
			return err
		}},
		{"clone", func(d *testDriver, vol *csi.Volume) error {
			_, err := d.CreateVolume(context.Background(), fromVolume("copy", vol.VolumeId, 0))
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
			fake.Fail = func(op string, _ ceph.ImageRef) error {
				if op == "clone" {
					return ceph.ErrNoSpace
				}
				return nil
			}
			wantCode(t, tc.call(d, vol), codes.ResourceExhausted)
			if snaps := fake.Snapshots(ref(vol.VolumeContext["imageName"])); len(snaps) != 0 {
				t.Errorf("the failed clone left snapshots %v on its source", snaps)
			}
		})
	}
}

// The CO repeats a CreateVolume whose answer it lost; by then the source
// may be deleted. The spec asks for the volume the first call made, not
// NotFound (which would leave the volume with nobody to delete it).
func TestCloneRepeatedAfterItsSourceWasDeletedReturnsTheVolume(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, d *testDriver, src *csi.Volume) (req *csi.CreateVolumeRequest, deleteSource func() error)
	}{
		{"from a volume", func(t *testing.T, d *testDriver, src *csi.Volume) (*csi.CreateVolumeRequest, func() error) {
			return fromVolume("copy", src.VolumeId, 2<<30), func() error {
				_, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: src.VolumeId, Secrets: secrets()})
				return err
			}
		}},
		{"from a snapshot", func(t *testing.T, d *testDriver, src *csi.Volume) (*csi.CreateVolumeRequest, func() error) {
			snap := mustSnapshot(t, d, "snap", src.VolumeId)
			return fromSnapshot("copy", snap.SnapshotId, 2<<30), func() error {
				_, err := d.DeleteSnapshot(context.Background(), &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId, Secrets: secrets()})
				return err
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newTestDriver(t)
			src := mustCreate(t, d, createReq("pvc-src", 1<<30, nil))
			req, deleteSource := tc.make(t, d, src)
			first := mustCreate(t, d, req)
			if err := deleteSource(); err != nil {
				t.Fatal(err)
			}
			again, err := d.CreateVolume(context.Background(), req)
			if err != nil {
				t.Fatalf("repeated CreateVolume: %v", err)
			}
			if again.Volume.VolumeId != first.VolumeId || again.Volume.CapacityBytes != 2<<30 {
				t.Fatalf("repeat answered %s (%d bytes), first %s", again.Volume.VolumeId, again.Volume.CapacityBytes, first.VolumeId)
			}
			other := req
			other.Name = "another"
			_, err = d.CreateVolume(context.Background(), other)
			wantCode(t, err, codes.NotFound)
		})
	}
}

// A crash between librbd's clone and the owner record leaves a clone that
// carries no record (or the parent's). When the source is deleted before
// the retry, nothing can finish it: it is removed and the source NotFound.
func TestUnfinishedCloneOfADeletedSourceIsRemoved(t *testing.T) {
	for _, inherited := range []bool{false, true} {
		t.Run(map[bool]string{false: "an unreadable owner record", true: "the parent's owner record"}[inherited], func(t *testing.T) {
			d, fake := newTestDriver(t)
			src := mustCreate(t, d, createReq("pvc-src", 1<<30, nil))
			req := fromVolume("copy", src.VolumeId, 0)
			plan, err := d.planCreate(req)
			if err != nil {
				t.Fatal(err)
			}
			srcRef := ref(src.VolumeContext["imageName"])
			ctx := context.Background()
			if _, err := fake.CreateSnap(ctx, adminCreds(), srcRef, "crashed", ceph.MeasureDepth); err != nil {
				t.Fatal(err)
			}
			if err := fake.CloneImage(ctx, adminCreds(), srcRef, "crashed", plan.ref, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
				t.Fatal(err)
			}
			if !inherited {
				if err := fake.SetMetadata(ctx, adminCreds(), plan.ref, map[string]string{metaOwner: ""}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: src.VolumeId, Secrets: secrets()}); err != nil {
				t.Fatal(err)
			}

			_, err = d.CreateVolume(ctx, req)
			wantCode(t, err, codes.NotFound, "source volume")
			if _, err := fake.StatImage(ctx, adminCreds(), plan.ref); err == nil {
				t.Fatalf("the unfinished clone %s is still there", plan.ref.Name)
			}
		})
	}
}

func TestCloneSizeIsAtLeastTheSourceAndWithinTheLimit(t *testing.T) {
	const src = 2 << 30
	tests := []struct {
		name         string
		size, limit  uint64
		given        bool
		want         uint64
		wantOutRange bool
	}{
		{"no size given: the source's", 0, 0, false, src, false},
		{"no size given, a limit below the source: OutOfRange", 0, 1 << 30, false, 0, true},
		{"larger than the source: as asked", 4 << 30, 0, true, 4 << 30, false},
		{"smaller than the source: the source's", 1 << 30, 0, true, src, false},
		{"smaller than the source, limit allows the source: the source's", 1 << 30, 3 << 30, true, src, false},
		{"smaller than the source, limit below it: OutOfRange", 1 << 30, 1 << 30, true, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cloneSize(createPlan{size: tc.size, limit: tc.limit, sizeGiven: tc.given}, src)
			if tc.wantOutRange {
				wantCode(t, err, codes.OutOfRange, "source")
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("cloneSize = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// A snapshot or clone the CO gave up on after a crash leaves its temporary
// snapshot on the source; deleting the source removes it, or the purge
// would wait for it forever. One a clone reads through moves to the
// snapshot trash namespace, and the clone keeps its data.
func TestDeleteVolumeRemovesTemporarySnapshotsAbandonedOnIt(t *testing.T) {
	tests := []struct {
		name        string
		withClone   bool
		wantTrashed int // trash entries left after the purge
	}{
		{"crashed before the clone: the volume is purged", false, 0},
		{"crashed after the clone: the volume waits for the clone only", true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			ctx := context.Background()
			vol := mustCreate(t, d, createReq("pvc-src", 1<<30, nil))
			src := ref(vol.VolumeContext["imageName"])
			tmp := params.TempSnapName("csi-snap-abandoned")
			if _, err := fake.CreateSnap(ctx, adminCreds(), src, tmp, ceph.MeasureDepth); err != nil {
				t.Fatal(err)
			}
			clone := ref("csi-snap-abandoned")
			if tc.withClone {
				if err := fake.CloneImage(ctx, adminCreds(), src, tmp, clone, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
					t.Fatal(err)
				}
			}

			if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId, Secrets: secrets()}); err != nil {
				t.Fatal(err)
			}
			if got := fake.Trash(testPool); len(got) != tc.wantTrashed {
				t.Fatalf("trash %v, want %d entries", got, tc.wantTrashed)
			}
			if tc.withClone {
				info, err := fake.StatImage(ctx, adminCreds(), clone)
				if err != nil || info.Parent == nil {
					t.Fatalf("the clone lost its parent: %+v, %v", info, err)
				}
			}
		})
	}
}

func TestDeleteVolumeLeavesSnapshotsItDidNotMake(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	vol := mustCreate(t, d, createReq("pvc-src", 1<<30, nil))
	src := ref(vol.VolumeContext["imageName"])
	if _, err := fake.CreateSnap(ctx, adminCreds(), src, "operator-snap", ceph.MeasureDepth); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	if got := fake.Trash(testPool); len(got) != 1 {
		t.Fatalf("trash %v: the volume with an operator's snapshot must wait in the trash", got)
	}
}

// A clone that finds its name taken by another attempt's clone still in
// progress answers Aborted and leaves the temporary snapshot alone: the
// other attempt clones from it.
func TestCloneFindingAnotherAttemptInProgressKeepsItsTemporarySnapshot(t *testing.T) {
	d, fake := newTestDriver(t)
	fake.PartialGrace = time.Hour
	ctx := context.Background()
	src := mustCreate(t, d, createReq("pvc-src", 1<<30, nil))
	req := fromVolume("copy", src.VolumeId, 0)
	plan, err := d.planCreate(req)
	if err != nil {
		t.Fatal(err)
	}
	srcRef := ref(src.VolumeContext["imageName"])
	tmp := params.TempSnapName(plan.ref.Name)
	// The other attempt: temporary snapshot taken, clone under way (its
	// image does not open yet).
	if _, err := fake.CreateSnap(ctx, adminCreds(), srcRef, tmp, ceph.MeasureDepth); err != nil {
		t.Fatal(err)
	}
	if err := fake.CloneImage(ctx, adminCreds(), srcRef, tmp, plan.ref, ceph.CloneSpec{Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	fake.Fail = func(op string, r ceph.ImageRef) error {
		if op == "stat" && r.Name == plan.ref.Name {
			return ceph.ErrNotFound
		}
		return nil
	}

	_, err = d.CreateVolume(ctx, req)
	wantCode(t, err, codes.Aborted)
	fake.Fail = nil
	snaps, err := fake.ListSnaps(ctx, adminCreds(), srcRef)
	if err != nil || !slices.Contains(snaps, tmp) {
		t.Fatalf("snapshots of the source %v (%v): the other attempt's %s is gone", snaps, err, tmp)
	}
}

// A restore takes the snapshot's size and depth from its owner record and
// opens the snapshot image only when the record cannot answer: an older
// record without them, or a chain the restore may push over the bound.
func TestRestoreInspectsTheSnapshotImageOnlyWhenItsRecordCannotAnswer(t *testing.T) {
	tests := []struct {
		name     string
		bound    int
		prepare  func(t *testing.T, fake *cephfake.Backend, image ceph.ImageRef)
		code     codes.Code
		inspects bool
	}{
		{"a record with size and depth is enough", 0, nil, codes.OK, false},
		{"an older record without them is inspected", 0, func(t *testing.T, fake *cephfake.Backend, image ceph.ImageRef) {
			rewriteSnapRecord(t, fake, image, func(r *snapOwner) { r.Size, r.Depth = 0, 0 })
		}, codes.OK, true},
		{"a chain the restore would take over the bound is inspected", 1, nil, codes.Aborted, true},
		{"a snapshot whose RBD snapshot is gone is NotFound", 0, func(t *testing.T, fake *cephfake.Backend, image ceph.ImageRef) {
			if err := fake.RemoveSnap(context.Background(), adminCreds(), image, snapName); err != nil {
				t.Fatal(err)
			}
		}, codes.NotFound, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			d.opts.MaxCloneDepth = tc.bound
			vol := mustCreate(t, d, createReq("pvc-a", 3<<30, nil))
			snap := mustSnapshot(t, d, "snap-a", vol.VolumeId)
			_, name, _ := decodeSnapshotID(snap.SnapshotId)
			if tc.prepare != nil {
				tc.prepare(t, fake, ref(name))
			}
			stats, walks := fake.Calls["snap-stat"], fake.Calls["depth"]
			resp, err := d.CreateVolume(context.Background(), fromSnapshot("restore", snap.SnapshotId, 0))
			if status.Code(err) != tc.code {
				t.Fatalf("CreateVolume: %v, want code %v", err, tc.code)
			}
			if err == nil && resp.Volume.CapacityBytes != 3<<30 {
				t.Errorf("restored %d bytes, want the snapshot's %d", resp.Volume.CapacityBytes, int64(3<<30))
			}
			inspected := fake.Calls["snap-stat"] > stats || fake.Calls["depth"] > walks
			if inspected != tc.inspects {
				t.Errorf("snapshot image inspected: %v, want %v", inspected, tc.inspects)
			}
		})
	}
}

// rewriteSnapRecord changes the owner record of a snapshot image.
func rewriteSnapRecord(t *testing.T, fake *cephfake.Backend, image ceph.ImageRef, change func(*snapOwner)) {
	t.Helper()
	ctx := context.Background()
	h, err := fake.ReadHeader(ctx, adminCreds(), image)
	if err != nil {
		t.Fatal(err)
	}
	md := h.Metadata
	var record snapOwner
	if err := json.Unmarshal([]byte(md[metaOwner]), &record); err != nil {
		t.Fatalf("owner record %q: %v", md[metaOwner], err)
	}
	change(&record)
	raw, err := json.Marshal(record)
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.SetMetadata(ctx, adminCreds(), image, map[string]string{metaOwner: string(raw)}); err != nil {
		t.Fatal(err)
	}
}

// CreateSnapshot walks its source's ancestors once, for the owner record,
// and takes the snapshot image's depth from that record; a clone of a
// volume uses the depth of its source's inspection. A depth over the bound
// is measured again, since a flatten may have shortened the chain.
func TestSnapshotAndCloneWalkAncestorsOnlyWhereNoRecordAnswers(t *testing.T) {
	tests := []struct {
		name  string
		bound int
		call  func(t *testing.T, d *testDriver, vol *csi.Volume) error
		walks int
	}{
		{"CreateSnapshot walks the source only", 0, func(t *testing.T, d *testDriver, vol *csi.Volume) error {
			_, err := d.CreateSnapshot(context.Background(), snapReq("snap-a", vol.VolumeId))
			return err
		}, 1},
		{"CreateSnapshot over the bound measures the snapshot image too", 1, func(t *testing.T, d *testDriver, vol *csi.Volume) error {
			r := mustCreate(t, d, fromVolume("clone-a", vol.VolumeId, 0)) // depth 1
			_, err := d.CreateSnapshot(context.Background(), snapReq("snap-a", r.VolumeId))
			return err
		}, 2},
		{"a clone of a volume takes no walk in its snapshot", 0, func(t *testing.T, d *testDriver, vol *csi.Volume) error {
			_, err := d.CreateVolume(context.Background(), fromVolume("clone-a", vol.VolumeId, 0))
			return err
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			d.opts.MaxCloneDepth = tc.bound
			vol := mustCreate(t, d, createReq("pvc-a", 1<<30, nil))
			if err := tc.call(t, d, vol); err != nil {
				t.Fatal(err)
			}
			if got := fake.Calls["snap-create-depth"]; got != tc.walks {
				t.Errorf("snapshots taken with a depth walk: %d, want %d", got, tc.walks)
			}
		})
	}
}
