package controller

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// TestKeyOnlySecretLifecycleWithLeastPrivilege is issue 11's "Done when"
// against the real cluster: the classic in-tree setup (adminId: USER, a
// Secret holding only key) with a user limited to the pool goes through
// create, expand, snapshot, restore, clone and delete with that Secret
// alone, and the pool and its trash hold nothing of the test afterwards.
// With mgr caps the ceph-mgr takes the trash purges; without, the mgr
// refuses them and the driver purges by itself, so both cap sets suffice.
func TestKeyOnlySecretLifecycleWithLeastPrivilege(t *testing.T) {
	tests := []struct {
		name    string
		withMgr bool
		// purgedBy is the driver's log line that says who took the purges.
		purgedBy string
	}{
		{"profile rbd with mgr", true, "Handed to ceph-mgr: trash purge"},
		{"profile rbd without mgr", false, "ceph-mgr did not take the trash purge; running it in the driver"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newSnapFixture(t)
			user := "kube-" + strings.TrimSuffix(f.Prefix, "-")
			key := harness.RestrictedUser(t, f.Env, user, harness.PoolUserCaps(f.Env.Pool, tc.withMgr)...)
			k := keyOnlyRun{f: f, user: user, secret: map[string]string{"key": key}}
			k.lifecycle(t)
			log, _ := os.ReadFile(f.drv.Log)
			if strings.Contains(string(log), key) {
				t.Fatal("the driver log holds the key")
			}
			line := ""
			for _, l := range strings.Split(string(log), "\n") {
				if strings.Contains(l, tc.purgedBy) {
					line = l
					break
				}
			}
			if line == "" {
				t.Errorf("the driver log has no %q", tc.purgedBy)
			}
			t.Logf("purges: %s", line)
		})
	}
}

type keyOnlyRun struct {
	f      *snapFixture
	user   string
	secret map[string]string
}

// createReq is the in-tree StorageClass: adminId names the user.
func (k keyOnlyRun) createReq(name string, src *csi.VolumeContentSource) *csi.CreateVolumeRequest {
	r := k.f.fromSource(name, 0, src)
	r.Parameters["adminId"] = k.user
	r.Secrets = k.secret
	return r
}

func (k keyOnlyRun) lifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := k.f.drv.Controller()
	vol, err := c.CreateVolume(ctx, k.createReq("pvc-src", nil))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	src := vol.GetVolume().GetVolumeId()
	if !strings.HasPrefix(src, "2/") || !strings.HasSuffix(src, "/"+k.user) {
		t.Fatalf("volume ID %q does not record client.%s", src, k.user)
	}
	exp, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: src, Secrets: k.secret, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
	if err != nil || exp.GetCapacityBytes() != 2<<30 {
		t.Fatalf("expand: %v, %v", exp, err)
	}
	snapReq := &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: src, Secrets: k.secret}
	snap, err := c.CreateSnapshot(ctx, snapReq)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapID := snap.GetSnapshot().GetSnapshotId()
	if !strings.HasSuffix(snapID, "/"+k.user) {
		t.Fatalf("snapshot ID %q does not record client.%s", snapID, k.user)
	}
	restored, err := c.CreateVolume(ctx, k.createReq("pvc-restored", snapSource(snapID)))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	clone, err := c.CreateVolume(ctx, k.createReq("pvc-clone", volSource(src)))
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	ids := []string{src, restored.GetVolume().GetVolumeId(), clone.GetVolume().GetVolumeId()}
	for _, v := range []*csi.CreateVolumeResponse{restored, clone} {
		if v.GetVolume().GetCapacityBytes() != 2<<30 {
			t.Errorf("%s: %d bytes, want the expanded source's %d", v.GetVolume().GetVolumeId(), v.GetVolume().GetCapacityBytes(), 2<<30)
		}
	}
	k.listsTheSameIDs(t, ctx, ids, snapID)

	if _, err := c.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snapID, Secrets: k.secret}); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	for _, id := range ids {
		if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: k.secret}); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	if imgs := append(k.f.Images(t), k.f.snapshotImages(t, false)...); len(imgs) != 0 {
		t.Fatalf("images left: %v", imgs)
	}
	// Purges wait for the clones that read through their images; the
	// driver retries its own every 30 s.
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && len(k.f.Trash(t))+len(k.f.snapshotImages(t, true)) > 0 {
		time.Sleep(time.Second)
	}
	if left := append(k.f.Trash(t), k.f.snapshotImages(t, true)...); len(left) != 0 {
		t.Fatalf("trash entries never purged: %v", left)
	}
}

// listsTheSameIDs checks that listing hands out the IDs the creates
// answered (read back from the owner records).
func (k keyOnlyRun) listsTheSameIDs(t *testing.T, ctx context.Context, vols []string, snapID string) {
	t.Helper()
	c := k.f.drv.Controller()
	lv, err := c.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatalf("ListVolumes: %v", err)
	}
	var listed []string
	for _, e := range lv.GetEntries() {
		listed = append(listed, e.GetVolume().GetVolumeId())
	}
	for _, id := range vols {
		if !slices.Contains(listed, id) {
			t.Errorf("ListVolumes lacks %q", id)
		}
	}
	gs, err := c.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: snapID, Secrets: k.secret})
	if err != nil || gs.GetSnapshot().GetSnapshotId() != snapID {
		t.Errorf("GetSnapshot = %v, %v", gs, err)
	}
	ls, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: vols[0], Secrets: k.secret})
	if err != nil || len(ls.GetEntries()) != 1 || ls.GetEntries()[0].GetSnapshot().GetSnapshotId() != snapID {
		t.Errorf("ListSnapshots = %v, %v; want %q", ls.GetEntries(), err, snapID)
	}
}

// TestKeyOnlySecretWithTheWrongKeyNamesTheUserAndItsSource: the real
// cluster refuses the key; the answer says which user, from where, and what
// to change, and never the key.
func TestKeyOnlySecretWithTheWrongKeyNamesTheUserAndItsSource(t *testing.T) {
	f := newSnapFixture(t)
	user := "kube-" + strings.TrimSuffix(f.Prefix, "-")
	key := harness.RestrictedUser(t, f.Env, user, harness.PoolUserCaps(f.Env.Pool, false)...)
	k := keyOnlyRun{f: f, user: user, secret: map[string]string{"key": key}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := f.drv.Controller()
	vol, err := c.CreateVolume(ctx, k.createReq("pvc-auth", nil))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := vol.GetVolume().GetVolumeId()
	wrong := "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="
	_, err = c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: map[string]string{"key": wrong}})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client."+user) || !strings.Contains(err.Error(), "volume or snapshot ID") {
		t.Errorf("got %v, want Unauthenticated naming client.%s and the volume ID", err, user)
	}
	if err != nil && strings.Contains(err.Error(), wrong) {
		t.Error("the error leaks the key")
	}
	if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: k.secret}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if left := f.WaitTrashEmpty(t, time.Minute); len(left) != 0 {
		t.Fatalf("trash entries never purged: %v", left)
	}
}
