package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
)

const (
	testKey   = "AQBdc1tlAAAAABAAl4m3cMfXTsXX0bO8Z2ZMXA=="
	otherKey  = "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="
	testPool  = "kube"
	clusterID = "c1"
)

func newTestDriver(t *testing.T) (*testDriver, *cephfake.Backend) {
	t.Helper()
	fake := cephfake.New("admin", testKey, testPool, "data")
	cfg, err := clusterconfig.Parse([]byte(`[{"clusterID":"c1","monitors":["127.0.0.1:6789"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	dDriver, err := New(Options{Mode: ModeController, InstanceID: "test", Clusters: cfg, Backend: fake})
	if err != nil {
		t.Fatal(err)
	}
	d := services(dDriver)
	d.purger.start()
	t.Cleanup(d.purger.stop)
	return d, fake
}

func secrets() map[string]string { return map[string]string{"userID": "admin", "userKey": testKey} }

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func createReq(name string, size int64, extra map[string]string) *csi.CreateVolumeRequest {
	p := map[string]string{"clusterID": clusterID, "pool": testPool}
	for k, v := range extra {
		p[k] = v
	}
	return &csi.CreateVolumeRequest{
		Name: name, Parameters: p, Secrets: secrets(),
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	}
}

func wantCode(t *testing.T, err error, code codes.Code, substr ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v (%v), want code %v", status.Code(err), err, code)
	}
	for _, s := range substr {
		if !strings.Contains(status.Convert(err).Message(), s) {
			t.Errorf("message %q does not mention %q", status.Convert(err).Message(), s)
		}
	}
}

func TestCreateVolumeRejectsBadRequests(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*csi.CreateVolumeRequest)
		mention []string
	}{
		{"missing name", func(r *csi.CreateVolumeRequest) { r.Name = "" }, []string{"name"}},
		{"no capabilities", func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = nil }, []string{"volume_capabilities"}},
		{"unknown parameter is named", func(r *csi.CreateVolumeRequest) { r.Parameters["replicas"] = "3" }, []string{`"replicas"`}},
		{"unknown cluster", func(r *csi.CreateVolumeRequest) { r.Parameters["clusterID"] = "nope" }, []string{"nope", "cluster config"}},
		{"image format 1", func(r *csi.CreateVolumeRequest) { r.Parameters["imageFormat"] = "1" }, []string{"imageFormat", "2"}},
		{"feature without dependency", func(r *csi.CreateVolumeRequest) { r.Parameters["imageFeatures"] = "layering,object-map" }, []string{"object-map", "exclusive-lock"}},
		{"unknown feature", func(r *csi.CreateVolumeRequest) { r.Parameters["imageFeatures"] = "layering,turbo" }, []string{"turbo"}},
		{"map option the node's mapper refuses", func(r *csi.CreateVolumeRequest) {
			r.Parameters["mounter"], r.Parameters["mapOptions"] = "krbd", "io-timeout=30"
		}, []string{"mapOptions", `"io-timeout"`, "krbd"}},
		{"map option no mapper accepts", func(r *csi.CreateVolumeRequest) { r.Parameters["mapOptions"] = "turbo=1" }, []string{"mapOptions", `"turbo"`}},
		{"mount_timeout=0, which waits forever", func(r *csi.CreateVolumeRequest) {
			r.Parameters["mounter"], r.Parameters["mapOptions"] = "krbd", "mount_timeout=0"
		}, []string{"mapOptions", `"mount_timeout"`, "from 1 to 600"}},
		{"unsupported filesystem", func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities[0].GetMount().FsType = "btrfs"
		}, []string{"btrfs"}},
		{"multi-node writer on a filesystem", func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities[0].AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		}, []string{"block"}},
		{"multi-node reader", func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}
		}, []string{"MULTI_NODE_READER_ONLY"}},
		{"no secrets", func(r *csi.CreateVolumeRequest) { r.Secrets = nil }, []string{"userID", "userKey"}},
		{"user without key", func(r *csi.CreateVolumeRequest) { r.Secrets = map[string]string{"userID": "admin"} }, []string{"userKey"}},
		{"key that is not base64", func(r *csi.CreateVolumeRequest) {
			r.Secrets = map[string]string{"userID": "admin", "userKey": "not a key!"}
		}, []string{"base64"}},
		{"content source of no kind", func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{}
		}, []string{"volume_content_source"}},
		{"negative size", func(r *csi.CreateVolumeRequest) { r.CapacityRange.RequiredBytes = -1 }, []string{"negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			req := createReq("pvc-1", 1<<30, nil)
			tc.mutate(req)
			_, err := d.CreateVolume(context.Background(), req)
			wantCode(t, err, codes.InvalidArgument, tc.mention...)
			if n := len(fake.Images(testPool)); n != 0 {
				t.Errorf("a rejected request left %d images", n)
			}
		})
	}
}

func TestCreateVolumeLimitBelowRequiredIsOutOfRange(t *testing.T) {
	d, _ := newTestDriver(t)
	req := createReq("pvc-1", 2<<30, nil)
	req.CapacityRange.LimitBytes = 1 << 30
	_, err := d.CreateVolume(context.Background(), req)
	wantCode(t, err, codes.OutOfRange)
}

func TestCreateVolumeWrongKeyNamesTheUser(t *testing.T) {
	d, _ := newTestDriver(t)
	req := createReq("pvc-1", 1<<30, nil)
	req.Secrets["userKey"] = otherKey
	_, err := d.CreateVolume(context.Background(), req)
	wantCode(t, err, codes.Unauthenticated, "client.admin")
	if strings.Contains(err.Error(), otherKey) {
		t.Fatal("error leaks the key")
	}
}

func TestCreateVolumeIsIdempotent(t *testing.T) {
	d, fake := newTestDriver(t)
	first, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
		if err != nil {
			t.Fatal(err)
		}
		if again.Volume.VolumeId != first.Volume.VolumeId || again.Volume.CapacityBytes != first.Volume.CapacityBytes {
			t.Fatalf("retry returned %v, first %v", again.Volume, first.Volume)
		}
	}
	if n := len(fake.Images(testPool)); n != 1 {
		t.Fatalf("%d images, want 1", n)
	}
}

func TestCreateVolumeRoundsUpToWholeMiB(t *testing.T) {
	d, _ := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1000, nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Volume.CapacityBytes != mib {
		t.Fatalf("capacity %d, want %d", resp.Volume.CapacityBytes, mib)
	}
}

func TestCreateVolumeWithIncompatibleRepeatIsAlreadyExists(t *testing.T) {
	tests := []struct {
		name  string
		again *csi.CreateVolumeRequest
	}{
		{"larger size", createReq("pvc-1", 2<<30, nil)},
		{"other features", createReq("pvc-1", 1<<30, map[string]string{"imageFeatures": "layering,exclusive-lock"})},
		{"other data pool", createReq("pvc-1", 1<<30, map[string]string{"dataPool": "data"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newTestDriver(t)
			if _, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil)); err != nil {
				t.Fatal(err)
			}
			_, err := d.CreateVolume(context.Background(), tc.again)
			wantCode(t, err, codes.AlreadyExists, "pvc-1")
		})
	}
}

func TestConcurrentCreatesOfOneNameMakeOneImage(t *testing.T) {
	d, fake := newTestDriver(t)
	var wg sync.WaitGroup
	ids := make([]string, 20)
	errs := make([]error, 20)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := d.CreateVolume(context.Background(), createReq(fmt.Sprintf("pvc-%d", i%4), 1<<30, nil))
			errs[i] = err
			if err == nil {
				ids[i] = resp.Volume.VolumeId
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if ids[i] != ids[i%4] {
			t.Fatalf("same name, different IDs: %s vs %s", ids[i], ids[i%4])
		}
	}
	if n := len(fake.Images(testPool)); n != 4 {
		t.Fatalf("%d images for 4 names", n)
	}
	if d.locks.Held() != 0 {
		t.Fatalf("%d locks still held", d.locks.Held())
	}
}

func TestCreateVolumeFinishesAnInterruptedCreate(t *testing.T) {
	d, fake := newTestDriver(t)
	// An earlier attempt created the image and died before writing the owner record.
	name := "pvc-crash"
	req := createReq(name, 1<<30, map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "shop"})
	plan, err := d.planCreate(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.CreateImage(context.Background(), plan.creds, plan.ref, ceph.ImageSpec{Size: plan.size, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	info, _ := fake.StatImage(context.Background(), plan.creds, plan.ref)
	if !strings.Contains(info.Metadata[metaOwner], `"pvcNamespace":"shop"`) {
		t.Fatalf("owner record not completed: %q", info.Metadata[metaOwner])
	}
}

func TestCreateVolumeReplacesAHalfCreatedImage(t *testing.T) {
	d, fake := newTestDriver(t)
	req := createReq("pvc-half", 1<<30, nil)
	plan, err := d.planCreate(req)
	if err != nil {
		t.Fatal(err)
	}
	// librbd died after reserving the name: the name is taken, the image
	// cannot be opened.
	if err := fake.CreateImage(context.Background(), plan.creds, plan.ref, ceph.ImageSpec{Size: 1}); err != nil {
		t.Fatal(err)
	}
	statFails := true
	fake.Fail = func(op string, _ ceph.ImageRef) error {
		if op == "stat" && statFails {
			statFails = false
			return ceph.ErrNotFound
		}
		return nil
	}
	if _, err := d.CreateVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if fake.Calls["remove"] != 1 {
		t.Fatalf("partial image not removed (calls %v)", fake.Calls)
	}
	info, err := fake.StatImage(context.Background(), plan.creds, plan.ref)
	if err != nil || info.Size != 1<<30 || info.Metadata[metaOwner] == "" {
		t.Fatalf("recreated image: %+v, %v", info, err)
	}
}

// Another controller (or this one's own call, abandoned at its deadline
// while librados went on) may be between writing the name and the header:
// its pieces are young, so they are left alone and waited for.
func TestCreateVolumeLeavesAYoungHalfCreatedImageAlone(t *testing.T) {
	tests := []struct {
		name          string
		unopenable    int // stat calls that find no header
		wait          time.Duration
		wantCode      codes.Code
		wantFragments []string
	}{
		{"the other create finishes within the wait: its image is adopted", 3, defaultPartialWait, codes.OK, nil},
		{"the header never appears: Aborted, naming the image", 1 << 30, 300 * time.Millisecond, codes.Aborted, []string{"could not be opened", "retry later"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newTestDriver(t)
			d.partialWait = tc.wait
			fake.PartialGrace = time.Hour
			req := createReq("pvc-young", 1<<30, nil)
			plan, err := d.planCreate(req)
			if err != nil {
				t.Fatal(err)
			}
			if err := fake.CreateImage(context.Background(), plan.creds, plan.ref, ceph.ImageSpec{Size: 1 << 30, Features: ceph.FeatureLayering}); err != nil {
				t.Fatal(err)
			}
			before, err := fake.StatImage(context.Background(), plan.creds, plan.ref)
			if err != nil {
				t.Fatal(err)
			}
			left := tc.unopenable
			fake.Fail = func(op string, _ ceph.ImageRef) error {
				if op == "stat" && left > 0 {
					left--
					return ceph.ErrNotFound
				}
				return nil
			}

			_, err = d.CreateVolume(context.Background(), req)
			if tc.wantCode == codes.OK && err != nil {
				t.Fatal(err)
			}
			if tc.wantCode != codes.OK {
				wantCode(t, err, tc.wantCode, tc.wantFragments...)
			}
			fake.Fail = nil
			after, err := fake.StatImage(context.Background(), plan.creds, plan.ref)
			if err != nil {
				t.Fatal(err)
			}
			if after.ID != before.ID {
				t.Fatalf("the other caller's image %s was replaced by %s", before.ID, after.ID)
			}
		})
	}
}

func TestCephFailuresMapToRetryableCodes(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{ceph.ErrTimeout, codes.DeadlineExceeded},
		{ceph.ErrUnavailable, codes.Unavailable},
		{ceph.ErrNoSpace, codes.ResourceExhausted},
		{ceph.ErrPermission, codes.PermissionDenied},
		{errors.New("strange"), codes.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			d, _ := newTestDriver(t)
			d.opts.Backend.(*cephfake.Backend).Fail = func(op string, _ ceph.ImageRef) error {
				if op == "create" {
					return tc.err
				}
				return nil
			}
			_, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
			wantCode(t, err, tc.code)
		})
	}
}

func TestCreateVolumeWaitsNoLongerThanItsDeadline(t *testing.T) {
	d, _ := newTestDriver(t)
	unlock, err := d.locks.Lock(context.Background(), "create/pvc-1")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = d.CreateVolume(ctx, createReq("pvc-1", 1<<30, nil))
	wantCode(t, err, codes.Aborted, "in progress")
}

func TestDeleteVolume(t *testing.T) {
	d, fake := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Volume.VolumeId
	for i := range 2 {
		if _, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets()}); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if n := len(fake.Images(testPool)); n != 0 {
		t.Fatalf("%d images left", n)
	}
	if tr := fake.Trash(testPool); len(tr) != 0 {
		t.Fatalf("trash not purged: %v", tr)
	}
}

func TestDeleteVolumeOfForeignIDSucceeds(t *testing.T) {
	d, _ := newTestDriver(t)
	for _, id := range []string{"pvc-123", "0001-0024-abc", "1/c1/x/y", strings.Repeat("a", 200)} {
		if _, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets()}); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
}

func TestDeleteVolumeOfUnknownClusterRefuses(t *testing.T) {
	d, _ := newTestDriver(t)
	_, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: "1/gone/1/csi-vol-0123456789abcdef0123456789abcdef", Secrets: secrets()})
	wantCode(t, err, codes.FailedPrecondition, "gone")
}

func TestDeleteVolumeInUseNamesTheClient(t *testing.T) {
	d, fake := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := d.planCreate(createReq("pvc-1", 1<<30, nil))
	fake.SetWatchers(plan.ref, []ceph.Watcher{{Addr: "10.1.2.3:0/42", Client: 4711}})
	_, err = d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId, Secrets: secrets()})
	wantCode(t, err, codes.FailedPrecondition, "4711", "10.1.2.3")
	if n := len(fake.Images(testPool)); n != 1 {
		t.Fatal("image in use was removed")
	}
}

func TestDeleteVolumeFinishesAnInterruptedDelete(t *testing.T) {
	d, fake := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	// The earlier attempt trashed the image and died before the purge.
	plan, _ := d.planCreate(createReq("pvc-1", 1<<30, nil))
	if _, err := fake.TrashImage(context.Background(), plan.creds, plan.ref); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	if tr := fake.Trash(testPool); len(tr) != 0 {
		t.Fatalf("leftover trash entry not purged: %v", tr)
	}
}

// A volume deleted, created again under the same name and deleted again
// leaves two trash entries of one name when the second delete dies before
// scheduling its purge (the first entry's purge may still be pending, or
// lost with a restart): the retry purges both.
func TestDeleteVolumeRetryPurgesEveryEntryOfAReusedName(t *testing.T) {
	d, fake := newTestDriver(t)
	plan, _ := d.planCreate(createReq("pvc-1", 1<<30, nil))
	var id string
	for range 2 {
		resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
		if err != nil {
			t.Fatal(err)
		}
		id = resp.Volume.VolumeId
		// Trashed by an attempt that died before scheduling the purge.
		if _, err := fake.TrashImage(context.Background(), plan.creds, plan.ref); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(fake.Trash(testPool)); n != 2 {
		t.Fatalf("%d trash entries before the retry, want 2", n)
	}
	if _, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	if tr := fake.Trash(testPool); len(tr) != 0 {
		t.Fatalf("trash entries not purged: %v", tr)
	}
}

func TestDeleteVolumePurgesLocallyWithoutMgr(t *testing.T) {
	d, fake := newTestDriver(t)
	fake.Mgr = false
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(fake.Trash(testPool)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if tr := fake.Trash(testPool); len(tr) != 0 {
		t.Fatalf("local purge did not run: %v", tr)
	}
}

func TestExpandVolume(t *testing.T) {
	d, _ := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		size      int64
		capab     *csi.VolumeCapability
		wantSize  int64
		wantNodeX bool
	}{
		{"grows a filesystem volume and asks for node expansion", 2 << 30, mountCap(), 2 << 30, true},
		{"smaller request keeps the size", 1 << 30, mountCap(), 2 << 30, true},
		{"block volumes need no node step", 3 << 30, blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER), 3 << 30, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := d.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{
				VolumeId: resp.Volume.VolumeId, Secrets: secrets(), VolumeCapability: tc.capab,
				CapacityRange: &csi.CapacityRange{RequiredBytes: tc.size},
			})
			if err != nil {
				t.Fatal(err)
			}
			if out.CapacityBytes != tc.wantSize || out.NodeExpansionRequired != tc.wantNodeX {
				t.Fatalf("got %d/%v, want %d/%v", out.CapacityBytes, out.NodeExpansionRequired, tc.wantSize, tc.wantNodeX)
			}
		})
	}
	_, err = d.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{
		VolumeId: "1/c1/1/csi-vol-00000000000000000000000000000000", Secrets: secrets(),
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
	})
	wantCode(t, err, codes.NotFound)
}

func TestValidateVolumeCapabilities(t *testing.T) {
	d, _ := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	ok, err := d.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: resp.Volume.VolumeId, Secrets: secrets(), VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	if err != nil || ok.Confirmed == nil {
		t.Fatalf("supported capability not confirmed: %v %v", ok, err)
	}
	bad, err := d.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: resp.Volume.VolumeId, Secrets: secrets(),
		VolumeCapabilities: []*csi.VolumeCapability{blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)},
	})
	if err != nil || bad.Confirmed != nil || bad.Message == "" {
		t.Fatalf("unsupported capability: %v %v", bad, err)
	}
	_, err = d.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{
		VolumeId: "1/c1/1/csi-vol-00000000000000000000000000000000", Secrets: secrets(), VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
	})
	wantCode(t, err, codes.NotFound)
}

func TestListVolumesPaginates(t *testing.T) {
	d, _ := newTestDriver(t)
	want := map[string]bool{}
	for i := range 5 {
		resp, err := d.CreateVolume(context.Background(), createReq(fmt.Sprintf("pvc-%d", i), 1<<30, nil))
		if err != nil {
			t.Fatal(err)
		}
		want[resp.Volume.VolumeId] = true
	}
	got := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp, err := d.ListVolumes(context.Background(), &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Entries) > 2 {
			t.Fatalf("page of %d entries, max 2", len(resp.Entries))
		}
		for _, e := range resp.Entries {
			got[e.Volume.VolumeId] = true
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d volumes, want %d", len(got), len(want))
	}
	_, err := d.ListVolumes(context.Background(), &csi.ListVolumesRequest{StartingToken: "garbage"})
	wantCode(t, err, codes.Aborted)
}

func TestGetCapacityHonoursQuota(t *testing.T) {
	d, fake := newTestDriver(t)
	fake.Usage = ceph.PoolUsage{MaxAvail: 100 << 30, UsedBytes: 8 << 30, QuotaBytes: 10 << 30}
	if _, err := d.CreateVolume(context.Background(), createReq("pvc-1", 1<<30, nil)); err != nil {
		t.Fatal(err)
	}
	resp, err := d.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": clusterID, "pool": testPool}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.AvailableCapacity != 2<<30 {
		t.Fatalf("capacity %d, want %d", resp.AvailableCapacity, 2<<30)
	}
}

func TestGetCapacityWithoutCredentialsSaysWhatToDo(t *testing.T) {
	d, _ := newTestDriver(t)
	_, err := d.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": clusterID, "pool": testPool}})
	wantCode(t, err, codes.FailedPrecondition, "secrets-dir")
}

func TestLegacyMonitorsParameterUsesConfiguredClusterID(t *testing.T) {
	d, _ := newTestDriver(t)
	req := createReq("pvc-1", 1<<30, nil)
	delete(req.Parameters, "clusterID")
	req.Parameters["monitors"] = "127.0.0.1:6789"
	req.Parameters["adminId"] = "admin"
	req.Secrets = map[string]string{"key": testKey}
	resp, err := d.CreateVolume(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Volume.VolumeId, "1/c1/") {
		t.Fatalf("volume ID %q does not use the configured cluster", resp.Volume.VolumeId)
	}
}

func TestListVolumesReadsEachOwnerRecordOnceAndOpensNoImage(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := d.CreateVolume(ctx, createReq(fmt.Sprintf("pvc-%d", i), 1<<30, nil)); err != nil {
			t.Fatal(err)
		}
	}
	stats := fake.Calls["stat"]
	for walk := range 3 {
		resp, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2})
		if err != nil || len(resp.Entries) != 2 {
			t.Fatalf("walk %d: ListVolumes = %v, %v; want a page of 2", walk, resp, err)
		}
	}
	if got := fake.Calls["metadata-by-id"]; got != 1 {
		t.Errorf("owner records read in %d calls over 3 walks, want 1 (the IDs are cached)", got)
	}
	if got := fake.Calls["stat"] - stats; got != 0 {
		t.Errorf("ListVolumes opened images %d times, want none", got)
	}
}

func TestListVolumesRereadsTheRecordOfAnImageRecreatedUnderItsName(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	first := mustCreate(t, d, createReq("pvc-1", 1<<30, nil))
	if _, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: first.VolumeId, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	fake.AddUser("kube", testKey)
	req := createReq("pvc-1", 1<<30, nil)
	req.Parameters["adminId"], req.Secrets = "kube", map[string]string{"key": testKey}
	second := mustCreate(t, d, req)
	if second.VolumeId == first.VolumeId {
		t.Fatalf("the key-only create answered the admin volume's ID %q", second.VolumeId)
	}
	resp, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(resp.Entries) != 1 || resp.Entries[0].Volume.VolumeId != second.VolumeId {
		t.Fatalf("ListVolumes = %v, %v; want only %q", resp.GetEntries(), err, second.VolumeId)
	}
}

// restartedController is a second controller over the same cluster and
// instance, as after a restart, with the listing credentials mounted
// where the chart mounts them (--secrets-dir/<clusterID>/).
func restartedController(t *testing.T, fake *cephfake.Backend) *testDriver {
	t.Helper()
	dir := secretsDirWith(t, "admin", testKey)
	cfg, err := clusterconfig.Parse([]byte(`[{"clusterID":"c1","monitors":["127.0.0.1:6789"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Mode: ModeController, InstanceID: "test", Clusters: cfg, Backend: fake, SecretsDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return services(d)
}

func TestRestartedControllerWithSecretsDirListsAndMeasuresAtOnce(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	vol := mustCreate(t, d, createReq("pvc-1", 1<<30, nil))
	snap, err := d.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: vol.VolumeId, Secrets: secrets()})
	if err != nil {
		t.Fatal(err)
	}
	fake.Usage = ceph.PoolUsage{MaxAvail: 10 << 30}

	fresh := restartedController(t, fake)
	lv, err := fresh.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(lv.Entries) != 1 || lv.Entries[0].Volume.VolumeId != vol.VolumeId {
		t.Errorf("ListVolumes right after a restart = %v, %v; want [%s]", lv.GetEntries(), err, vol.VolumeId)
	}
	ls, err := fresh.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || len(ls.Entries) != 1 || ls.Entries[0].Snapshot.SnapshotId != snap.Snapshot.SnapshotId {
		t.Errorf("ListSnapshots right after a restart = %v, %v; want [%s]", ls.GetEntries(), err, snap.Snapshot.SnapshotId)
	}
	capResp, err := fresh.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil || capResp.AvailableCapacity != 10<<30 {
		t.Errorf("GetCapacity without parameters right after a restart = %v, %v; want the cluster's %d (its two RBD pools share it)", capResp, err, 10<<30)
	}
	capResp, err = fresh.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": clusterID, "pool": testPool}})
	if err != nil || capResp.AvailableCapacity != 10<<30 {
		t.Errorf("GetCapacity of pool %s right after a restart = %v, %v; want %d", testPool, capResp, err, 10<<30)
	}
}

// The pools of one cluster share its OSDs: GetCapacity without parameters
// is the largest pool's figure, not their sum.
func TestGetCapacityWithoutParametersCountsAClustersSpaceOnce(t *testing.T) {
	_, fake := newTestDriver(t)
	fake.Usage = ceph.PoolUsage{MaxAvail: 10 << 30}
	fake.PoolUsages = map[string]ceph.PoolUsage{testPool: {MaxAvail: 10 << 30, UsedBytes: 1 << 30, QuotaBytes: 3 << 30}}
	resp, err := restartedController(t, fake).GetCapacity(context.Background(), &csi.GetCapacityRequest{})
	if err != nil || resp.AvailableCapacity != 10<<30 {
		t.Fatalf("GetCapacity = %v, %v; want the larger pool's %d (2 GiB and 10 GiB of one cluster's space)", resp, err, 10<<30)
	}
}

func TestRestartedControllerSkipsPoolsItsListingCredentialsMayNotRead(t *testing.T) {
	d, fake := newTestDriver(t)
	vol := mustCreate(t, d, createReq("pvc-1", 1<<30, nil))
	fake.NonRBDPools = map[string]bool{}
	fake.Fail = func(op string, ref ceph.ImageRef) error {
		if ref.Pool == "data" && (op == "list-ids" || op == "list" || op == "usage") {
			return ceph.ErrPermission
		}
		return nil
	}
	fresh := restartedController(t, fake)
	lv, err := fresh.ListVolumes(context.Background(), &csi.ListVolumesRequest{})
	if err != nil || len(lv.Entries) != 1 || lv.Entries[0].Volume.VolumeId != vol.VolumeId {
		t.Errorf("ListVolumes = %v, %v; want [%s] with pool data skipped", lv.GetEntries(), err, vol.VolumeId)
	}
	if _, err := fresh.ListSnapshots(context.Background(), &csi.ListSnapshotsRequest{}); err != nil {
		t.Errorf("ListSnapshots: %v; want pool data skipped", err)
	}
	if _, err := fresh.GetCapacity(context.Background(), &csi.GetCapacityRequest{}); err != nil {
		t.Errorf("GetCapacity: %v; want pool data skipped", err)
	}
}

func TestRestartedControllerWithoutListingCredentialsListsNothingYet(t *testing.T) {
	d, fake := newTestDriver(t)
	mustCreate(t, d, createReq("pvc-1", 1<<30, nil))
	cfg, _ := clusterconfig.Parse([]byte(`[{"clusterID":"c1","monitors":["127.0.0.1:6789"]}]`))
	dd, err := New(Options{Mode: ModeController, InstanceID: "test", Clusters: cfg, Backend: fake})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := services(dd).ListVolumes(context.Background(), &csi.ListVolumesRequest{})
	if err != nil || len(lv.Entries) != 0 {
		t.Errorf("ListVolumes without --secrets-dir = %v, %v; want empty until a call shows credentials (README)", lv.GetEntries(), err)
	}
}

func TestListVolumesWalkListsThePoolsOnceAndToleratesChangesBetweenPages(t *testing.T) {
	d, fake := newTestDriver(t)
	ctx := context.Background()
	for i := range 5 {
		mustCreate(t, d, createReq(fmt.Sprintf("pvc-%d", i), 1<<30, nil))
	}
	lists := fake.Calls["list-ids"]
	first, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, d, createReq("pvc-between-pages", 1<<30, nil))
	seen := len(first.Entries)
	for token := first.NextToken; token != ""; {
		resp, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		seen += len(resp.Entries)
		token = resp.NextToken
	}
	if seen != 5 {
		t.Errorf("the walk listed %d volumes, want the 5 there when it began", seen)
	}
	if got := fake.Calls["list-ids"] - lists; got != 1 {
		t.Errorf("a walk of 3 pages listed the pool %d times, want 1", got)
	}
	again, err := d.ListVolumes(ctx, &csi.ListVolumesRequest{})
	if err != nil || len(again.Entries) != 6 {
		t.Errorf("the next walk = %v, %v; want the 6 volumes", again.GetEntries(), err)
	}
}
