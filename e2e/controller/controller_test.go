// Package controller tests the Controller service against a real Ceph
// cluster: crash safety, concurrency, bounded calls and credential errors.
package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/driver"
)

const clusterID = "e2e"

// fixture is one test's view of the cluster (harness.Pool: a unique
// image-name prefix so that counting images and trash entries sees only this
// test's volumes).
type fixture struct{ *harness.Pool }

func newFixture(t *testing.T) *fixture { return &fixture{harness.NewPool(t, clusterID)} }

func (f *fixture) args(instance string) []string {
	return []string{"--mode=controller", "--cluster-config=" + f.ConfigPath(), "--instance-id=" + instance, "--ceph-timeout=10s", "-v=4"}
}

// TestCrashAtEachStepThenRetryLeavesNoOrphan kills the driver at each armed
// failpoint of CreateVolume and DeleteVolume, retries with a fresh process,
// and checks that exactly the expected images exist afterwards.
func TestCrashAtEachStepThenRetryLeavesNoOrphan(t *testing.T) {
	f := newFixture(t)
	d := harness.Start(t, f.Dir, f.args("crash"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The driver writes a plain image's rbd_id, directory entry and header
	// (with the owner record) itself; object-map images go through librbd,
	// whose create the owner record follows.
	points := []struct{ name, features string }{
		{"create-before-directory", ""},
		{"create-before-header", ""},
		{"create-before-metadata", "layering,exclusive-lock,object-map,fast-diff"},
		{"create-before-reply", ""},
	}
	ids := map[string]string{}
	for _, p := range points {
		point, name := p.name, "pvc-"+p.name
		req := f.CreateReq(name)
		if p.features != "" {
			req.Parameters["imageFeatures"] = p.features
		}
		d.Restart("RBD_CSI_FAILPOINTS=" + point)
		if _, err := d.Controller().CreateVolume(ctx, req); err == nil {
			t.Fatalf("%s: call succeeded although the driver was to die", point)
		}
		if !d.WaitExit(10 * time.Second) {
			t.Fatalf("%s: failpoint did not kill the driver", point)
		}
		d.Restart()
		// Pieces without a header are left alone until they are older
		// than twice --ceph-timeout (they may be another create still at
		// work): the retry answers Aborted until then, as the provisioner
		// would see.
		var resp *csi.CreateVolumeResponse
		err := d.Retry(ctx, func(ctx context.Context) (err error) {
			resp, err = d.Controller().CreateVolume(ctx, req)
			return err
		})
		if err != nil {
			t.Fatalf("%s: retry: %v", point, err)
		}
		ids[point] = resp.Volume.VolumeId
		img := harness.ImageName(resp.Volume.VolumeId)
		if rec := f.OwnerRecord(t, img); !strings.Contains(rec, `"pvcName":"`+name+`"`) {
			t.Errorf("%s: owner record after retry = %q", point, rec)
		}
	}
	if got := f.Images(t); len(got) != len(points) {
		t.Fatalf("after crashed creates: %d images %v, want %d", len(got), got, len(points))
	}

	for i, point := range []string{"trash-before-move", "trash-before-purge"} {
		id := ids[points[i].name]
		d.Restart("RBD_CSI_FAILPOINTS=" + point)
		if _, err := d.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: f.Secrets()}); err == nil {
			t.Fatalf("%s: call succeeded although the driver was to die", point)
		}
		if !d.WaitExit(10 * time.Second) {
			t.Fatalf("%s: failpoint did not kill the driver", point)
		}
		d.Restart()
		if _, err := d.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: f.Secrets()}); err != nil {
			t.Fatalf("%s: retry: %v", point, err)
		}
	}
	for _, p := range points[2:] {
		if _, err := d.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[p.name], Secrets: f.Secrets()}); err != nil {
			t.Fatalf("delete the volume of %s: %v", p.name, err)
		}
	}
	if got := f.Images(t); len(got) != 0 {
		t.Fatalf("after crashed deletes: images left %v", got)
	}
	if left := f.WaitTrashEmpty(t, 60*time.Second); len(left) != 0 {
		t.Fatalf("trash entries never purged: %v", left)
	}
}

// TestRandomKillsDuringProvisioningLoseNothing runs creates and deletes while
// a killer SIGKILLs the driver at random moments; every call is retried until
// it succeeds, then the pool must hold exactly the volumes the client
// believes exist.
func TestRandomKillsDuringProvisioningLoseNothing(t *testing.T) {
	f := newFixture(t)
	d := harness.Start(t, f.Dir, f.args("random"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Each attempt is, with even odds, cut short by a SIGKILL at a random
	// moment of its first 60 ms.
	var kills atomic.Int32
	withKiller := func(fn func(context.Context) error) func(context.Context) error {
		return d.WithRandomKill(60*time.Millisecond, &kills, fn)
	}

	believed := harness.Believed{}
	const ops = 40
	for i := range ops {
		name := fmt.Sprintf("pvc-%d", i%12)
		if err := d.Retry(ctx, withKiller(believed.Step(f.Pool, d, name, i%3 == 0))); err != nil {
			t.Fatalf("op %d on %s: %v", i, name, err)
		}
	}
	if !d.Alive() {
		d.Restart()
	}
	t.Logf("%d operations, %d SIGKILLs", ops, kills.Load())
	if kills.Load() == 0 {
		t.Fatal("the killer never fired: the test proved nothing")
	}

	images := f.Images(t)
	orphans, missing := believed.Diff(images)
	for _, img := range orphans {
		t.Errorf("orphaned image %s", img)
	}
	for _, img := range missing {
		t.Errorf("volume %s believed to exist is gone", img)
	}
	for _, img := range images {
		if f.OwnerRecord(t, img) == "" {
			t.Errorf("image %s has no owner record", img)
		}
	}
	purgeStart := time.Now()
	if left := f.WaitTrashEmpty(t, 90*time.Second); len(left) != 0 {
		t.Errorf("trash entries never purged: %v", left)
	}
	t.Logf("trash drained in %v", time.Since(purgeStart).Round(time.Millisecond))
	for _, id := range believed {
		_, _ = d.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: f.Secrets()})
	}
}

// TestConcurrentSameNameCreatesAcrossTwoControllers races two controller
// processes (same instance ID, as two replicas without leader election
// would) on the same names: one image per name, every caller gets its ID.
// Callers retry Aborted, as the provisioner does: a controller that finds
// the name taken by an image it cannot open yet waits only a moment for the
// other one's create before answering it.
func TestConcurrentSameNameCreatesAcrossTwoControllers(t *testing.T) {
	f := newFixture(t)
	a := harness.Start(t, filepath.Join(f.Dir), f.args("twins"))
	dirB := filepath.Join(f.Dir, "b")
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	b := harness.Start(t, dirB, f.args("twins"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const names, callers = 6, 8
	ids := make([][]string, names)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for n := range names {
		ids[n] = make([]string, callers)
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := a.Controller()
				if c%2 == 1 {
					client = b.Controller()
				}
				req := f.CreateReq(fmt.Sprintf("pvc-race-%d", n))
				resp, err := client.CreateVolume(ctx, req)
				if status.Code(err) == codes.Aborted {
					t.Logf("name %d, caller %d: %v; retrying while Aborted", n, c, err)
				}
				for status.Code(err) == codes.Aborted && ctx.Err() == nil {
					time.Sleep(time.Second)
					resp, err = client.CreateVolume(ctx, req)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[n][c] = resp.Volume.VolumeId
			}()
		}
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	for n := range names {
		for c := range callers {
			if ids[n][c] != ids[n][0] {
				t.Errorf("name %d: caller %d got %s, caller 0 got %s", n, c, ids[n][c], ids[n][0])
			}
		}
	}
	if got := f.Images(t); len(got) != names {
		t.Fatalf("%d images for %d names: %v", len(got), names, got)
	}
	for n := range names {
		if _, err := a.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[n][0], Secrets: f.Secrets()}); err != nil {
			t.Error(err)
		}
	}
}

// TestUnreachableClusterAnswersWithinTheDeadline points the driver at a
// monitor address nobody listens on.
func TestUnreachableClusterAnswersWithinTheDeadline(t *testing.T) {
	env := cephtest.FromEnv(t)
	cfg, err := clusterconfig.Parse([]byte(`[{"clusterID":"void","monitors":["127.0.0.1:1"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	backend := librbd.New(librbd.Options{OpTimeout: 5 * time.Second})
	defer backend.Close()
	d, err := driver.New(driver.Options{Mode: driver.ModeController, InstanceID: "void", Clusters: cfg, Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := d.Serve(filepath.Join(t.TempDir(), "csi.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(time.Second)

	req := &csi.CreateVolumeRequest{
		Name: "pvc-void", Parameters: map[string]string{"clusterID": "void", "pool": "kube"},
		Secrets: map[string]string{"userID": "admin", "userKey": env.Admin.Key},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	}
	const deadline = 2 * time.Second
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			_, err := d.Controller().CreateVolume(ctx, req)
			took := time.Since(start)
			if c := status.Code(err); c != codes.DeadlineExceeded && c != codes.Unavailable && c != codes.Aborted {
				t.Errorf("call %d: code %v (%v), want DeadlineExceeded, Unavailable or Aborted", i, c, err)
			}
			// A generous margin: the property is "bounded", not "fast".
			if took > deadline+time.Second {
				t.Errorf("call %d returned after %v, deadline %v", i, took, deadline)
			}
		}()
	}
	wg.Wait()
	// The lock on the name must be free again: a later call is not Aborted.
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if _, err := d.Controller().CreateVolume(ctx, req); status.Code(err) == codes.Aborted {
		t.Fatalf("lock still held after the calls returned: %v", err)
	}
}

func TestWrongKeyIsUnauthenticatedNamingTheUser(t *testing.T) {
	f := newFixture(t)
	d := harness.Start(t, f.Dir, f.args("auth"))
	req := f.CreateReq("pvc-auth")
	wrong := "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="
	req.Secrets = map[string]string{"userID": "admin", "userKey": wrong}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.Controller().CreateVolume(ctx, req)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "client.admin") {
		t.Fatalf("got %v, want Unauthenticated naming client.admin", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatal("the error leaks the key")
	}
	log, _ := os.ReadFile(d.Log)
	if strings.Contains(string(log), wrong) || strings.Contains(string(log), f.Env.Admin.Key) {
		t.Fatal("the driver log holds a key")
	}
}

func TestCreateWithDataPoolAndFeatures(t *testing.T) {
	f := newFixture(t)
	if f.Env.DataPool == "" {
		t.Skip("no data pool in this cluster (CEPH_DATA_POOL_NAME unset)")
	}
	d := harness.Start(t, f.Dir, f.args("features"))
	req := f.CreateReq("pvc-features")
	req.Parameters["dataPool"] = f.Env.DataPool
	req.Parameters["imageFeatures"] = "layering,exclusive-lock,object-map,fast-diff"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := d.Controller().CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	img := harness.ImageName(resp.Volume.VolumeId)
	info, err := f.Backend.StatImage(ctx, f.Env.Admin, ceph.ImageRef{Cluster: f.Cluster(), Pool: f.Env.Pool, Name: img})
	if err != nil {
		t.Fatal(err)
	}
	want := ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff
	if info.Features&ceph.UserFeatures != want || info.DataPool != f.Env.DataPool {
		t.Fatalf("image has features %s, data pool %q", info.Features, info.DataPool)
	}
	// The same name with other features is a conflict, not a silent reuse.
	req.Parameters["imageFeatures"] = "layering"
	if _, err := d.Controller().CreateVolume(ctx, req); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("conflicting repeat: %v, want AlreadyExists", err)
	}
	if _, err := d.Controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId, Secrets: f.Secrets()}); err != nil {
		t.Fatal(err)
	}
}
