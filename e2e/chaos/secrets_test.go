package chaos

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/kms"
)

// TestNoKeyReachesTheLogOfAFullFlowAtTheHighestVerbosity runs one volume
// through its whole life, plus calls with a key the cluster rejects, with
// the driver at -v=10, and then searches the driver's log for both keys, in
// their base64 form and as the hex of their bytes. It is not part of the
// fault-injection suite: it runs under `make test` as well.
func TestNoKeyReachesTheLogOfAFullFlowAtTheHighestVerbosity(t *testing.T) {
	p := harness.NewPool(t, clusterID)
	d := harness.Start(t, p.Dir, []string{
		"--mode=all", "--nodeid=secrets-node", "--cluster-config=" + p.ConfigPath(), "--instance-id=secrets",
		"--mapper=fuse", "--state-dir=" + filepath.Join(p.Dir, "state"), "--keyring-dir=" + filepath.Join(p.Dir, "keyrings"), "-v=10",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wrong := randomCephxKey(t)
	kek, wrongKEK := harness.NewKEK(t), harness.NewKEK(t)
	d.Redact = append(d.Redact, keyForms(t, p.Env.Admin.Key, wrong)...)
	d.Redact = append(d.Redact, harness.KeyForms(t, []string{kek, wrongKEK}, nil)...)

	logged := []string{"CreateVolume", "ControllerExpandVolume", "DeleteVolume"}
	if os.Geteuid() == 0 {
		nodeFlow(ctx, t, p, d, wrong)
		logged = append(logged, "NodeStageVolume", "NodePublishVolume", "NodeGetVolumeStats", "NodeUnpublishVolume", "NodeUnstageVolume")
	} else {
		t.Log("node calls skipped: they mount filesystems and attach loop devices, run as root; the controller calls still run")
	}
	controllerFlow(ctx, t, p, d, wrong)
	deks := encryptedFlow(ctx, t, p, d, kek, wrongKEK)
	// A failed test dumps and keeps the log: the DEKs are redacted too.
	d.Redact = append(d.Redact, harness.KeyForms(t, nil, deks)...)
	logged = append(logged, "CreateSnapshot")

	log, err := os.ReadFile(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	// The flow must have been logged in full, requests included (only
	// logged at -v=5 and above), or the search below would prove nothing.
	for _, method := range logged {
		if !strings.Contains(string(log), `"RPC request" id=`) || !strings.Contains(string(log), method+`" request=`) {
			t.Fatalf("no %s request in the driver log: the flow did not run at high verbosity", method)
		}
	}
	t.Logf("searched %d log lines of %d RPCs for the keys", strings.Count(string(log), "\n"), strings.Count(string(log), `"RPC request"`))
	forms := append(keyForms(t, p.Env.Admin.Key, wrong), harness.KeyForms(t, []string{kek, wrongKEK}, deks)...)
	found, err := d.LogHolds(forms...)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 0 {
		// Never print a key, not even in a failure.
		t.Fatalf("the driver log (%s) holds %d forms of the test keys", d.Log, len(found))
	}
	if files := filesHolding(t, p.Dir, d.Log, forms); len(files) != 0 {
		t.Fatalf("files left under %s hold forms of the test keys: %v", p.Dir, files)
	}
}

// encryptedFlow runs an encrypted volume through create, snapshot,
// restore, clone, expansion and a node stage (refused with
// FailedPrecondition where the kernel has no device-mapper), plus calls
// with a wrong KEK, and returns the DEKs it made, for the leak search.
func encryptedFlow(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, kek, wrongKEK string) []kms.DEK {
	t.Helper()
	withKEK := func(req *csi.CreateVolumeRequest, k string) *csi.CreateVolumeRequest {
		req.Parameters["encrypted"] = "true"
		req.Secrets[kms.DefaultSecretKey] = k
		return req
	}
	resp, err := d.Controller().CreateVolume(ctx, withKEK(p.CreateReq("pvc-secrets-enc"), kek))
	if err != nil {
		t.Fatal(err)
	}
	vol := resp.Volume
	secrets := p.Secrets()
	secrets[kms.DefaultSecretKey] = kek
	snap, err := d.Controller().CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-secrets-enc", SourceVolumeId: vol.VolumeId, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	restore := withKEK(p.CreateReq("pvc-secrets-restored"), kek)
	restore.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.Snapshot.SnapshotId}}}
	restored, err := d.Controller().CreateVolume(ctx, restore)
	if err != nil {
		t.Fatal(err)
	}
	clone := withKEK(p.CreateReq("pvc-secrets-clone"), kek)
	clone.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol.VolumeId}}}
	cloned, err := d.Controller().CreateVolume(ctx, clone)
	if err != nil {
		t.Fatal(err)
	}
	wrongRestore := withKEK(p.CreateReq("pvc-secrets-wrong-kek"), wrongKEK)
	wrongRestore.VolumeContentSource = restore.VolumeContentSource
	if _, err := d.Controller().CreateVolume(ctx, wrongRestore); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restore with another KEK: %v, want FailedPrecondition", err)
	}
	if _, err := d.Controller().ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}, Secrets: secrets,
	}); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		wrongSecrets := p.Secrets()
		wrongSecrets[kms.DefaultSecretKey] = wrongKEK
		stageEncrypted(ctx, t, p, d, vol, secrets, wrongSecrets)
	}
	var deks []kms.DEK
	for _, v := range []*csi.Volume{vol, restored.Volume, cloned.Volume} {
		deks = append(deks, p.DEK(t, harness.ImageName(v.VolumeId), kek))
	}
	if _, err := d.Controller().DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId, Secrets: secrets}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{cloned.Volume.VolumeId, vol.VolumeId, restored.Volume.VolumeId} {
		if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(id)); err != nil {
			t.Fatal(err)
		}
	}
	return deks
}

// stageEncrypted stages (and unstages) an encrypted volume, or checks the
// refusal of a kernel without device-mapper; a stage with the wrong KEK's
// Secrets is refused first (FailedPrecondition, for the KEK where the
// kernel has device-mapper).
func stageEncrypted(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, vol *csi.Volume, secrets, wrongSecrets map[string]string) {
	t.Helper()
	staging := filepath.Join(p.Dir, "enc", "staging")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	req := &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: mountCap("ext4"), Secrets: wrongSecrets, VolumeContext: vol.VolumeContext}
	_, err := d.Node().NodeStageVolume(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || (harness.HasDMCrypt() && !strings.Contains(err.Error(), "KEK")) {
		t.Fatalf("encrypted stage with the wrong KEK: %v, want FailedPrecondition naming the KEK", err)
	}
	req.Secrets = secrets
	_, err = d.Node().NodeStageVolume(ctx, req)
	if !harness.HasDMCrypt() {
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("encrypted stage without device-mapper: %v, want FailedPrecondition", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
}

// filesHolding lists the files under dir (but skip, searched already)
// holding any of forms: state and keyring files must hold no key.
func filesHolding(t *testing.T, dir, skip string, forms []string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || path == skip || !e.Type().IsRegular() {
			return nil
		}
		if info, err := e.Info(); err != nil || info.Size() > 16<<20 {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, f := range forms {
			if f != "" && strings.Contains(string(data), f) {
				out = append(out, path)
				break
			}
		}
		return nil
	})
	return out
}

// controllerFlow creates, expands and deletes a volume, and creates one
// with the rejected key.
func controllerFlow(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, wrong string) {
	t.Helper()
	resp, err := d.Controller().CreateVolume(ctx, p.CreateReq("pvc-secrets"))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Volume.VolumeId
	if _, err := d.Controller().ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}, Secrets: p.Secrets(),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(id)); err != nil {
		t.Fatal(err)
	}
	bad := p.CreateReq("pvc-secrets-rejected")
	bad.Secrets = map[string]string{"userID": p.Env.Admin.User, "userKey": wrong}
	if _, err := d.Controller().CreateVolume(ctx, bad); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("create with a rejected key: %v, want Unauthenticated", err)
	}
}

// nodeFlow stages, publishes, writes, reads stats, unpublishes and unstages
// a volume, and tries a stage with the rejected key.
func nodeFlow(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, wrong string) {
	t.Helper()
	v := setUpVolume(ctx, t, p, d, 0)
	if _, err := d.Node().NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.vol.VolumeId, VolumePath: v.target}); err != nil {
		t.Fatal(err)
	}
	if n := tearDown(ctx, d, []*nodeVolume{v}); n != 0 {
		t.Fatalf("%d unpublish/unstage calls failed", n)
	}
	bad := v.stageReq(p)
	bad.Secrets = map[string]string{"userID": p.Env.Admin.User, "userKey": wrong}
	if _, err := d.Node().NodeStageVolume(ctx, bad); err == nil {
		t.Fatal("stage with a rejected key succeeded")
	}
	if left := harness.Leftovers(filepath.Dir(v.staging)); len(left) != 0 {
		t.Fatalf("the rejected stage left %v", left)
	}
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
		t.Fatal(err)
	}
}

// randomCephxKey is a well-formed cephx key (type, creation time, length,
// 16 secret bytes) that no cluster knows.
func randomCephxKey(t *testing.T) string {
	t.Helper()
	blob := make([]byte, 28)
	blob[0] = 1
	blob[10] = 16
	if _, err := rand.Read(blob[12:]); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(blob)
}

// keyForms are the ways a key could show in a log: as given, and as the hex
// of its decoded bytes and of its 16 secret bytes.
func keyForms(t *testing.T, keys ...string) []string {
	t.Helper()
	var forms []string
	for _, k := range keys {
		forms = append(forms, k)
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) < 28 {
			t.Fatalf("a test key is not a cephx key (%d bytes)", len(raw))
		}
		forms = append(forms, hex.EncodeToString(raw), hex.EncodeToString(raw[12:28]))
	}
	return forms
}
