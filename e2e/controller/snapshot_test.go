package controller

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

// snapFixture drives a controller child process with its own instance ID,
// so that the snapshot images (named by instance, not by volume prefix) of
// one test are told apart from everything else in the pool.
type snapFixture struct {
	*harness.Pool
	instance string
	drv      *harness.Driver
}

func newSnapFixture(t *testing.T, extraArgs ...string) *snapFixture {
	t.Helper()
	p := harness.NewPool(t, clusterID)
	f := &snapFixture{Pool: p, instance: "snap-" + strings.TrimSuffix(p.Prefix, "-")}
	args := append([]string{"--mode=controller", "--cluster-config=" + p.ConfigPath(), "--instance-id=" + f.instance, "--ceph-timeout=10s", "-v=4"}, extraArgs...)
	f.drv = harness.Start(t, p.Dir, args)
	return f
}

func (f *snapFixture) snapReq(name, source string) *csi.CreateSnapshotRequest {
	return &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: source, Secrets: f.Secrets(), Parameters: map[string]string{"clusterID": clusterID}}
}

func (f *snapFixture) fromSource(name string, size int64, src *csi.VolumeContentSource) *csi.CreateVolumeRequest {
	r := f.CreateReq(name)
	r.CapacityRange.RequiredBytes = size
	r.VolumeContentSource = src
	return r
}

func snapSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func volSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

// snapshotImages lists this test's snapshot images in the pool, or in its
// trash.
func (f *snapFixture) snapshotImages(t *testing.T, trash bool) []string {
	t.Helper()
	var names []string
	if trash {
		entries, err := f.Backend.ListTrash(context.Background(), f.Env.Admin, f.Cluster(), f.Env.Pool)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, e.Name)
		}
	} else {
		var err error
		if names, err = f.Backend.ListImages(context.Background(), f.Env.Admin, f.Cluster(), f.Env.Pool); err != nil {
			t.Fatal(err)
		}
	}
	var mine []string
	for _, n := range names {
		if params.IsSnapshotImage(n) && params.OwnedBy(n, f.instance) {
			mine = append(mine, n)
		}
	}
	return mine
}

// userSnapshots lists an image's snapshots as `rbd snap ls` shows them
// (the user namespace: what an operator would have to clean up).
func (f *snapFixture) userSnapshots(t *testing.T, image string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rbd", "-c", f.Env.Conf, "--id", f.Env.Admin.User, "snap", "ls", "--format", "json", f.Env.Pool+"/"+image).Output()
	if err != nil {
		t.Fatalf("rbd snap ls %s: %v", image, err)
	}
	var snaps []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &snaps); err != nil {
		t.Fatalf("rbd snap ls %s: %v in %q", image, err, out)
	}
	names := make([]string, 0, len(snaps))
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	return names
}

// crashThenRetry arms point, expects the call to die with the driver,
// restarts it clean and returns the retry's error. The retry is repeated
// while it is Aborted, as the sidecars do: pieces a crash left are taken
// for a create still running until they are older than the driver's grace
// (twice --ceph-timeout).
func (f *snapFixture) crashThenRetry(t *testing.T, ctx context.Context, point string, call func(context.Context) error) error {
	t.Helper()
	f.drv.Restart("RBD_CSI_FAILPOINTS=" + point)
	if err := call(ctx); err == nil {
		t.Fatalf("%s: call succeeded although the driver was to die", point)
	}
	if !f.drv.WaitExit(10 * time.Second) {
		t.Fatalf("%s: failpoint did not kill the driver", point)
	}
	f.drv.Restart()
	err := call(ctx)
	if status.Code(err) == codes.Aborted {
		t.Logf("%s: retry: %v; retrying while Aborted", point, err)
	}
	for status.Code(err) == codes.Aborted && ctx.Err() == nil {
		time.Sleep(2 * time.Second)
		err = call(ctx)
	}
	return err
}

// TestCrashInSnapshotRestoreAndCloneThenRetryLeaksNothing kills the driver
// at every failpoint of CreateSnapshot, of CreateVolume from a snapshot and
// from a volume, and of DeleteSnapshot; each retry by a fresh process must
// complete, leave no temporary snapshot on the source, and after everything
// is deleted no image, snapshot image or trash entry of the test remains.
func TestCrashInSnapshotRestoreAndCloneThenRetryLeaksNothing(t *testing.T) {
	t.Parallel()
	f := newSnapFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	src, err := f.drv.Controller().CreateVolume(ctx, f.CreateReq("source"))
	if err != nil {
		t.Fatal(err)
	}
	srcImage := harness.ImageName(src.Volume.VolumeId)

	snaps := f.crashSnapshots(t, ctx, src.Volume.VolumeId, srcImage)
	volumes := f.crashRestores(t, ctx, snaps[0], src.Volume.VolumeId)
	if got := f.userSnapshots(t, srcImage); len(got) != 0 {
		t.Errorf("source keeps snapshots %v after the clones", got)
	}

	// Delete, one crash included, dependents first so that each purge can
	// succeed at once; then nothing may remain.
	for _, id := range volumes {
		if _, err := f.drv.Controller().DeleteVolume(ctx, f.DeleteReq(id)); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	if left := f.WaitTrashEmpty(t, 90*time.Second); len(left) != 0 {
		t.Fatalf("restored and cloned volumes never purged: %v", left)
	}
	del := func(id string) func(context.Context) error {
		return func(c context.Context) error {
			_, err := f.drv.Controller().DeleteSnapshot(c, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: f.Secrets()})
			return err
		}
	}
	if err := f.crashThenRetry(t, ctx, "delete-snapshot-before-trash", del(snaps[0])); err != nil {
		t.Fatalf("delete-snapshot-before-trash: retry: %v", err)
	}
	for _, id := range snaps[1:] {
		if err := del(id)(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.drv.Controller().DeleteVolume(ctx, f.DeleteReq(src.Volume.VolumeId)); err != nil {
		t.Fatal(err)
	}
	if got := append(f.Images(t), f.snapshotImages(t, false)...); len(got) != 0 {
		t.Fatalf("images left after every delete: %v", got)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for time.Now().Before(deadline) && len(f.Trash(t))+len(f.snapshotImages(t, true)) > 0 {
		time.Sleep(time.Second)
	}
	if left := append(f.Trash(t), f.snapshotImages(t, true)...); len(left) != 0 {
		t.Fatalf("trash entries never purged: %v", left)
	}
}

// crashSnapshots takes one snapshot per CreateSnapshot failpoint and
// returns their IDs.
func (f *snapFixture) crashSnapshots(t *testing.T, ctx context.Context, sourceID, srcImage string) []string {
	t.Helper()
	var ids []string
	for _, point := range []string{"snapshot-after-source-snap", "clone-before-metadata", "snapshot-after-clone", "snapshot-before-source-cleanup", "snapshot-before-reply"} {
		var resp *csi.CreateSnapshotResponse
		err := f.crashThenRetry(t, ctx, point, func(c context.Context) error {
			var err error
			resp, err = f.drv.Controller().CreateSnapshot(c, f.snapReq("snap-"+point, sourceID))
			return err
		})
		if err != nil {
			t.Fatalf("%s: retry: %v", point, err)
		}
		s := resp.Snapshot
		if !s.ReadyToUse || s.SizeBytes != 1<<30 || s.SourceVolumeId != sourceID || s.CreationTime == nil {
			t.Errorf("%s: snapshot %v", point, s)
		}
		if got := f.userSnapshots(t, srcImage); len(got) != 0 {
			t.Errorf("%s: source keeps snapshots %v", point, got)
		}
		image, _, _ := strings.Cut(harness.ImageName(s.SnapshotId), "@")
		if got := f.userSnapshots(t, image); len(got) != 1 {
			t.Errorf("%s: snapshot image has snapshots %v, want one", point, got)
		}
		ids = append(ids, s.SnapshotId)
	}
	if got := f.snapshotImages(t, false); len(got) != len(ids) {
		t.Fatalf("%d snapshot images %v for %d snapshots", len(got), got, len(ids))
	}
	list, err := f.drv.Controller().ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: sourceID, Secrets: f.Secrets()})
	if err != nil || len(list.Entries) != len(ids) {
		t.Fatalf("ListSnapshots by source: %v, %v; want %d", list, err, len(ids))
	}
	return ids
}

// crashRestores makes volumes from the snapshot and from the source volume,
// crashing at each of their failpoints, and returns their IDs.
func (f *snapFixture) crashRestores(t *testing.T, ctx context.Context, snapID, sourceID string) []string {
	t.Helper()
	cases := []struct {
		point string
		src   *csi.VolumeContentSource
	}{
		{"clone-before-metadata", snapSource(snapID)},
		{"clone-before-resize", snapSource(snapID)},
		{"create-before-reply", snapSource(snapID)},
		{"clone-after-source-snap", volSource(sourceID)},
		{"clone-before-metadata", volSource(sourceID)},
		{"clone-before-resize", volSource(sourceID)},
	}
	var ids []string
	for i, tc := range cases {
		name := "copy-" + strconv.Itoa(i) + "-" + tc.point
		var resp *csi.CreateVolumeResponse
		err := f.crashThenRetry(t, ctx, tc.point, func(c context.Context) error {
			var err error
			resp, err = f.drv.Controller().CreateVolume(c, f.fromSource(name, 2<<30, tc.src))
			return err
		})
		if err != nil {
			t.Fatalf("%s: retry: %v", name, err)
		}
		if resp.Volume.CapacityBytes != 2<<30 {
			t.Errorf("%s: capacity %d, want 2 GiB", name, resp.Volume.CapacityBytes)
		}
		if rec := f.OwnerRecord(t, harness.ImageName(resp.Volume.VolumeId)); !strings.Contains(rec, `"source":`) {
			t.Errorf("%s: owner record %q names no source", name, rec)
		}
		ids = append(ids, resp.Volume.VolumeId)
	}
	if got := f.Images(t); len(got) != len(ids)+1 {
		t.Fatalf("%d images %v, want the source and %d copies", len(got), got, len(ids))
	}
	return ids
}

// TestChainDeeperThanTheBoundIsFlattened builds snapshot-of-restore-of-
// snapshot chains past a bound of 2 ancestors: the first snapshot over the
// bound is reported not ready and the restore from it answers Aborted until
// the mgr (or the driver) has flattened it; the chain then starts afresh.
func TestChainDeeperThanTheBoundIsFlattened(t *testing.T) {
	t.Parallel()
	f := newSnapFixture(t, "--max-clone-depth=2")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vol, err := f.drv.Controller().CreateVolume(ctx, f.CreateReq("gen-0"))
	if err != nil {
		t.Fatal(err)
	}
	volumeID := vol.Volume.VolumeId
	sawNotReady, sawAborted := false, false
	for gen := 1; gen <= 4; gen++ {
		snapID, notReady := f.readySnapshot(t, ctx, "snap-"+strconv.Itoa(gen), volumeID)
		sawNotReady = sawNotReady || notReady
		var resp *csi.CreateVolumeResponse
		for {
			resp, err = f.drv.Controller().CreateVolume(ctx, f.fromSource("gen-"+strconv.Itoa(gen), 1<<30, snapSource(snapID)))
			if status.Code(err) != codes.Aborted {
				break
			}
			sawAborted = true
			time.Sleep(time.Second)
		}
		if err != nil {
			t.Fatalf("generation %d: %v", gen, err)
		}
		volumeID = resp.Volume.VolumeId
		depth, err := f.Backend.CloneDepth(ctx, f.Env.Admin, f.imageRef(harness.ImageName(volumeID)))
		if err != nil {
			t.Fatal(err)
		}
		if depth > 2 {
			t.Fatalf("generation %d reads through %d ancestors, over the bound 2", gen, depth)
		}
	}
	if !sawNotReady || !sawAborted {
		t.Fatalf("over the bound: snapshot not ready seen %v, restore Aborted seen %v; want both", sawNotReady, sawAborted)
	}
}

func (f *snapFixture) imageRef(name string) ceph.ImageRef {
	return ceph.ImageRef{Cluster: f.Cluster(), Pool: f.Env.Pool, Name: name}
}

// readySnapshot polls CreateSnapshot, as external-snapshotter does, until
// the snapshot is ready; notReady tells whether it ever was not.
func (f *snapFixture) readySnapshot(t *testing.T, ctx context.Context, name, source string) (id string, notReady bool) {
	t.Helper()
	for {
		resp, err := f.drv.Controller().CreateSnapshot(ctx, f.snapReq(name, source))
		if err != nil {
			t.Fatalf("snapshot %s: %v", name, err)
		}
		if resp.Snapshot.ReadyToUse {
			return resp.Snapshot.SnapshotId, notReady
		}
		notReady = true
		time.Sleep(time.Second)
	}
}

// TestDeletingTheSourceFirstReclaimsEverythingOnceNothingDependsOnIt deletes
// a volume, then its snapshot, while a volume restored from the snapshot
// lives: both wait in the trash (librbd refuses to remove what a clone reads
// through) and the restored volume stays readable; once it is deleted too,
// the purges (retried by the mgr) empty the trash.
func TestDeletingTheSourceFirstReclaimsEverythingOnceNothingDependsOnIt(t *testing.T) {
	t.Parallel()
	f := newSnapFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	src, err := f.drv.Controller().CreateVolume(ctx, f.CreateReq("source"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.drv.Controller().CreateSnapshot(ctx, f.snapReq("snap", src.Volume.VolumeId))
	if err != nil {
		t.Fatal(err)
	}
	restored, err := f.drv.Controller().CreateVolume(ctx, f.fromSource("restored", 0, snapSource(snap.Snapshot.SnapshotId)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.drv.Controller().DeleteVolume(ctx, f.DeleteReq(src.Volume.VolumeId)); err != nil {
		t.Fatalf("delete source first: %v", err)
	}
	if _, err := f.drv.Controller().DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId, Secrets: f.Secrets()}); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	time.Sleep(3 * time.Second) // give the mgr its first (failing) attempt
	if got := append(f.Trash(t), f.snapshotImages(t, true)...); len(got) != 2 {
		t.Fatalf("trash %v: want the source and the snapshot image waiting for the restored volume", got)
	}
	restoredRef := f.imageRef(harness.ImageName(restored.Volume.VolumeId))
	if depth, err := f.Backend.CloneDepth(ctx, f.Env.Admin, restoredRef); err != nil || depth != 2 {
		t.Fatalf("restored volume reads through %d ancestors (%v), want 2 in the trash", depth, err)
	}
	if _, err := f.drv.Controller().DeleteVolume(ctx, f.DeleteReq(restored.Volume.VolumeId)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(6 * time.Minute)
	for time.Now().Before(deadline) && len(f.Trash(t))+len(f.snapshotImages(t, true)) > 0 {
		time.Sleep(2 * time.Second)
	}
	if left := append(f.Trash(t), f.snapshotImages(t, true)...); len(left) != 0 {
		t.Fatalf("never reclaimed: %v (ceph rbd task list shows the mgr's retries)", left)
	}
	if got := f.Images(t); len(got) != 0 {
		t.Fatalf("images left: %v", got)
	}
}
