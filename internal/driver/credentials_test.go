package driver

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
)

// kubeKey is the key of client.kube, the classic in-tree setup's user.
const kubeKey = "AQBdc1tlAAAAABAAa3ViZWt1YmVrdWJla3ViZQ=="

func keyOnly(key string) map[string]string { return map[string]string{"key": key} }

// kubeDriver is a driver whose cluster knows client.admin and client.kube.
func kubeDriver(t *testing.T) (*testDriver, *cephfake.Backend) {
	t.Helper()
	d, fake := newTestDriver(t)
	fake.AddUser("kube", kubeKey)
	return d, fake
}

// kubeCreate is a CreateVolume through a key-only Secret with adminId: kube.
func kubeCreate(name string) *csi.CreateVolumeRequest {
	r := createReq(name, 1<<30, map[string]string{"adminId": "kube"})
	r.Secrets = keyOnly(kubeKey)
	return r
}

func TestResolveIdentityFollowsOneRule(t *testing.T) {
	kube := userHint{user: "kube", from: "StorageClass parameter adminId"}
	fromID := userHint{user: "other", from: "the volume or snapshot ID"}
	tests := []struct {
		name       string
		secrets    map[string]string
		hints      []userHint
		wantUser   string
		wantRecord string
		wantFrom   string
	}{
		{"a Secret naming its user wins over every hint", map[string]string{"userID": "admin", "userKey": testKey}, []userHint{kube, fromID}, "admin", "", ""},
		{"userID with an in-tree key field is that user", map[string]string{"userID": "x", "key": testKey}, []userHint{kube}, "x", "", ""},
		{"a named non-admin user is not recorded", map[string]string{"userID": "kube", "userKey": kubeKey}, nil, "kube", "", ""},
		{"key only: the parameter comes first", keyOnly(kubeKey), []userHint{kube, fromID}, "kube", "kube", kube.from},
		{"key only: the ID when no parameter names one", keyOnly(kubeKey), []userHint{{}, fromID}, "other", "other", fromID.from},
		{"key only: admin when nothing names one", keyOnly(testKey), []userHint{{}, {}}, "admin", "", ""},
		{"key only: an explicit admin is not recorded", keyOnly(testKey), []userHint{{user: "admin", from: "p"}}, "admin", "", "p"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			who, err := resolveIdentity(tc.secrets, "secrets", tc.hints...)
			if err != nil {
				t.Fatal(err)
			}
			if who.creds.User != tc.wantUser || who.record != tc.wantRecord || who.from != tc.wantFrom {
				t.Errorf("got user %q record %q from %q; want %q, %q, %q", who.creds.User, who.record, who.from, tc.wantUser, tc.wantRecord, tc.wantFrom)
			}
		})
	}
}

func TestResolveIdentityRefusesIncompleteSecretsNamingTheField(t *testing.T) {
	for name, secrets := range map[string]map[string]string{
		"no secrets":             nil,
		"userID without a key":   {"userID": "kube"},
		"userKey without userID": {"userKey": kubeKey},
		"key not base64":         {"key": "not a key!"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := resolveIdentity(secrets, "provisioner secrets", userHint{user: "kube", from: "p"})
			wantCode(t, err, codes.InvalidArgument, "provisioner secrets")
			if strings.Contains(err.Error(), kubeKey) {
				t.Fatal("error leaks the key")
			}
		})
	}
}

// TestKeyOnlySecretGoesThroughTheWholeLifecycle is issue 11's "Done when"
// against the fake: one key-only Secret with adminId: kube creates,
// expands, snapshots, restores, clones, lists and deletes, and nothing is
// left in the pool or its trash.
func TestKeyOnlySecretGoesThroughTheWholeLifecycle(t *testing.T) {
	d, fake := kubeDriver(t)
	fake.Mgr = false // purges run in the driver, with the request's credentials
	d.purger.retryAfter = 10 * time.Millisecond
	ctx := context.Background()
	sec := keyOnly(kubeKey)
	vol := mustCreate(t, d, kubeCreate("pvc-src"))
	if !strings.HasPrefix(vol.VolumeId, "2/") || !strings.HasSuffix(vol.VolumeId, "/kube") {
		t.Fatalf("volume ID %q does not record client.kube", vol.VolumeId)
	}
	if _, err := d.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.VolumeId, Secrets: sec, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}}); err != nil {
		t.Fatalf("expand: %v", err)
	}
	snapResp, err := d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: vol.VolumeId, Secrets: sec})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snap := snapResp.GetSnapshot()
	if !strings.HasPrefix(snap.SnapshotId, "2/") || !strings.HasSuffix(snap.SnapshotId, "/kube") {
		t.Fatalf("snapshot ID %q does not inherit client.kube", snap.SnapshotId)
	}
	restoreReq := fromSnapshot("pvc-restored", snap.SnapshotId, 0)
	restoreReq.Parameters["adminId"], restoreReq.Secrets = "kube", sec
	restored := mustCreate(t, d, restoreReq)
	cloneReq := fromVolume("pvc-clone", vol.VolumeId, 0)
	cloneReq.Parameters["adminId"], cloneReq.Secrets = "kube", sec
	clone := mustCreate(t, d, cloneReq)
	if restored.CapacityBytes != 2<<30 || clone.CapacityBytes != 2<<30 {
		t.Errorf("restored %d and clone %d bytes, want the expanded source's %d", restored.CapacityBytes, clone.CapacityBytes, 2<<30)
	}

	// Listing hands out the very IDs the create calls answered.
	lv, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, e := range lv.GetEntries() {
		listed = append(listed, e.GetVolume().GetVolumeId())
	}
	for _, id := range []string{vol.VolumeId, restored.VolumeId, clone.VolumeId} {
		if !slices.Contains(listed, id) {
			t.Errorf("ListVolumes %v lacks %q", listed, id)
		}
	}
	ls, err := d.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: vol.VolumeId})
	if err != nil || len(ls.GetEntries()) != 1 || ls.GetEntries()[0].GetSnapshot().GetSnapshotId() != snap.SnapshotId {
		t.Errorf("ListSnapshots = %v, %v; want %q", ls.GetEntries(), err, snap.SnapshotId)
	}
	if got, err := d.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: snap.SnapshotId, Secrets: sec}); err != nil || got.GetSnapshot() == nil {
		t.Errorf("GetSnapshot = %v, %v", got, err)
	}

	if _, err := d.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId, Secrets: sec}); err != nil {
		t.Fatalf("delete snapshot: %v", err)
	}
	for _, id := range []string{vol.VolumeId, restored.VolumeId, clone.VolumeId} {
		if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: sec}); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	// Purges wait for what depends on them, retried until they succeed.
	deadline := time.Now().Add(5 * time.Second)
	for len(fake.Trash(testPool)) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if imgs, tr := fake.Images(testPool), fake.Trash(testPool); len(imgs)+len(tr) != 0 {
		t.Fatalf("left in the pool: images %v, trash %v", imgs, tr)
	}
}

// TestCallsWithoutParametersFindTheUser: every call that gets only an ID
// and a Secret resolves the same way, for old (version 1) and new IDs.
func TestCallsWithoutParametersFindTheUser(t *testing.T) {
	type call func(d *testDriver, id string, sec map[string]string) error
	calls := map[string]call{
		"DeleteVolume": func(d *testDriver, id string, sec map[string]string) error {
			_, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: sec})
			return err
		},
		"ControllerExpandVolume": func(d *testDriver, id string, sec map[string]string) error {
			_, err := d.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{VolumeId: id, Secrets: sec, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return err
		},
		"CreateSnapshot": func(d *testDriver, id string, sec map[string]string) error {
			_, err := d.CreateSnapshot(context.Background(), &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: id, Secrets: sec})
			return err
		},
		"ValidateVolumeCapabilities": func(d *testDriver, id string, sec map[string]string) error {
			_, err := d.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, Secrets: sec, VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
			return err
		},
	}
	tests := []struct {
		name     string
		create   func() *csi.CreateVolumeRequest
		secrets  map[string]string
		code     codes.Code
		mentions []string
	}{
		{"old ID, key-only admin Secret: as before", func() *csi.CreateVolumeRequest { return createReq("pvc", 1<<30, nil) }, keyOnly(testKey), codes.OK, nil},
		{"old ID, Secret naming kube (the migration path)", kubeV1Create, map[string]string{"userID": "kube", "key": kubeKey}, codes.OK, nil},
		{"old ID, key-only kube Secret: says to add userID", kubeV1Create, keyOnly(kubeKey), codes.Unauthenticated, []string{"client.admin", "add userID", "\"1/\""}},
		{"new ID, key-only kube Secret", func() *csi.CreateVolumeRequest { return kubeCreate("pvc") }, keyOnly(kubeKey), codes.OK, nil},
		{"new ID, Secret naming admin wins", func() *csi.CreateVolumeRequest { return kubeCreate("pvc") }, secrets(), codes.OK, nil},
		{"new ID, key-only wrong key: names the user and where it came from", func() *csi.CreateVolumeRequest { return kubeCreate("pvc") }, keyOnly(otherKey), codes.Unauthenticated, []string{"client.kube", "volume or snapshot ID", "fix the key"}},
		{"new ID, named user with wrong key: names the field", func() *csi.CreateVolumeRequest { return kubeCreate("pvc") }, map[string]string{"userID": "kube", "userKey": otherKey}, codes.Unauthenticated, []string{"client.kube", "Secret field userID"}},
	}
	for _, tc := range tests {
		for rpc, do := range calls {
			t.Run(tc.name+"/"+rpc, func(t *testing.T) {
				d, _ := kubeDriver(t)
				vol := mustCreate(t, d, tc.create())
				err := do(d, vol.VolumeId, maps.Clone(tc.secrets))
				if tc.code == codes.OK {
					if err != nil {
						t.Fatalf("%s: %v", rpc, err)
					}
					return
				}
				wantCode(t, err, tc.code, tc.mentions...)
				for _, k := range []string{kubeKey, otherKey, testKey} {
					if strings.Contains(err.Error(), k) {
						t.Fatal("error leaks a key")
					}
				}
			})
		}
	}
}

// kubeV1Create makes a volume the way a driver before version 2 IDs did
// for a Secret naming client.kube: its ID records no user.
func kubeV1Create() *csi.CreateVolumeRequest {
	r := createReq("pvc", 1<<30, nil)
	r.Secrets = map[string]string{"userID": "kube", "userKey": kubeKey}
	return r
}

func TestSnapshotIDsOfKeyOnlyVolumesResolveTheUser(t *testing.T) {
	tests := []struct {
		name    string
		secrets map[string]string
		code    codes.Code
	}{
		{"key-only kube Secret", keyOnly(kubeKey), codes.OK},
		{"Secret naming admin", secrets(), codes.OK},
		{"key-only wrong key", keyOnly(otherKey), codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := kubeDriver(t)
			vol := mustCreate(t, d, kubeCreate("pvc"))
			resp, err := d.CreateSnapshot(context.Background(), &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: vol.VolumeId, Secrets: keyOnly(kubeKey)})
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetSnapshot().GetSnapshotId()
			_, err = d.GetSnapshot(context.Background(), &csi.GetSnapshotRequest{SnapshotId: id, Secrets: tc.secrets})
			if status.Code(err) != tc.code {
				t.Errorf("GetSnapshot: %v, want %v", err, tc.code)
			}
			_, err = d.DeleteSnapshot(context.Background(), &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: tc.secrets})
			if status.Code(err) != tc.code {
				t.Errorf("DeleteSnapshot: %v, want %v", err, tc.code)
			}
			if tc.code != codes.OK && !strings.Contains(err.Error(), "client.kube") {
				t.Errorf("DeleteSnapshot error %q does not name client.kube", err)
			}
		})
	}
}

func TestCreateVolumeWithKeyOnlySecretAndNoAdminIDKeepsVersion1IDs(t *testing.T) {
	d, _ := kubeDriver(t)
	for name, p := range map[string]map[string]string{"no adminId": nil, "adminId admin": {"adminId": "admin"}} {
		r := createReq("pvc-"+strings.ReplaceAll(name, " ", "-"), 1<<30, p)
		r.Secrets = keyOnly(testKey)
		vol := mustCreate(t, d, r)
		if !strings.HasPrefix(vol.VolumeId, "1/") {
			t.Errorf("%s: ID %q, want version 1 as before", name, vol.VolumeId)
		}
	}
	r := createReq("pvc-named", 1<<30, nil)
	r.Secrets = map[string]string{"userID": "kube", "userKey": kubeKey}
	if vol := mustCreate(t, d, r); !strings.HasPrefix(vol.VolumeId, "1/") {
		t.Errorf("Secret naming kube: ID %q, want version 1 as before", vol.VolumeId)
	}
}

func TestNodeStageWithKeyOnlySecretFindsTheUser(t *testing.T) {
	tests := []struct {
		name   string
		ctx    func(vc map[string]string)
		secret map[string]string
		code   codes.Code
	}{
		{"userId from the volume context", func(vc map[string]string) { vc["userId"] = "kube" }, keyOnly(kubeKey), codes.OK},
		{"no userId in the context: the ID's user", func(vc map[string]string) { delete(vc, "userId") }, keyOnly(kubeKey), codes.OK},
		{"the context's userId wins over the ID's", func(vc map[string]string) { vc["userId"] = "admin" }, keyOnly(testKey), codes.OK},
		{"a Secret naming its user wins", func(vc map[string]string) { vc["userId"] = "kube" }, secrets(), codes.OK},
		{"wrong key names the user and the context", func(vc map[string]string) { vc["userId"] = "kube" }, keyOnly(otherKey), codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.ceph.AddUser("kube", kubeKey)
			vol := mustCreate(t, e.d, kubeCreate("pvc-kube"))
			if vol.VolumeContext["userId"] != "kube" {
				t.Fatalf("volume context %v does not carry userId kube", vol.VolumeContext)
			}
			vc := maps.Clone(vol.VolumeContext)
			tc.ctx(vc)
			req := &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: e.staging, VolumeCapability: mountCap(), Secrets: tc.secret, VolumeContext: vc}
			_, err := e.d.NodeStageVolume(context.Background(), req)
			if tc.code == codes.OK {
				if err != nil {
					t.Fatalf("stage: %v", err)
				}
				if _, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: e.staging}); err != nil {
					t.Fatalf("unstage: %v", err)
				}
				return
			}
			wantCode(t, err, tc.code, "client.kube", "volume context userId")
			if strings.Contains(err.Error(), otherKey) {
				t.Fatal("error leaks the key")
			}
		})
	}
}
