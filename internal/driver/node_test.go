package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// nodeEnv is a driver serving both services over the Ceph fake, a fake
// mapper and the fake mounter, with one created volume and a staging
// directory for it.
type nodeEnv struct {
	d       *testDriver
	ceph    *cephfake.Backend
	m       *fakeMapper
	mnt     *mounter.Fake
	opts    Options
	volID   string
	vc      map[string]string
	ref     ceph.ImageRef
	dir     string
	staging string
}

func newNodeEnv(t *testing.T) *nodeEnv {
	t.Helper()
	fake := cephfake.New("admin", testKey, testPool, "data")
	cfg, err := clusterconfig.Parse([]byte(`[{"clusterID":"c1","monitors":["127.0.0.1:6789"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &nodeEnv{ceph: fake, m: newFakeMapper(t, dir), mnt: mounter.NewFake(), dir: dir, staging: filepath.Join(dir, "globalmount")}
	e.opts = Options{Mode: ModeAll, NodeID: "node-1", InstanceID: "test", Clusters: cfg, Backend: fake,
		Node: NodeOptions{StateDir: t.TempDir(), Mapper: "fake"}}
	e.d = e.restart(t, e.m, e.mnt)
	resp, err := e.d.CreateVolume(context.Background(), createReq("pvc-node", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	e.volID, e.vc = resp.Volume.VolumeId, resp.Volume.VolumeContext
	e.ref = ceph.ImageRef{Cluster: ceph.Cluster{ID: clusterID, Monitors: []string{"127.0.0.1:6789"}}, Pool: testPool, Name: e.vc["imageName"]}
	if err := os.Mkdir(e.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	return e
}

// restart builds another Driver on the same state directory, as a plugin
// restart does, and checks at the end of the test that it holds no lock.
func (e *nodeEnv) restart(t *testing.T, m mapper.Mapper, mnt *mounter.Fake) *testDriver {
	t.Helper()
	opts := e.opts
	opts.Node.Mappers = map[string]mapper.Mapper{"fake": m}
	opts.Node.Mounter = mnt
	dDriver, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	d := services(dDriver)
	t.Cleanup(func() {
		if n := d.locks.Held(); n != 0 {
			t.Errorf("%d volume locks still held", n)
		}
	})
	return d
}

func (e *nodeEnv) spec() string { return testPool + "/" + e.ref.Name }

func (e *nodeEnv) devPath() string {
	return e.m.devicePath(mapper.Image{Pool: testPool, Name: e.ref.Name})
}

func (e *nodeEnv) stageReq(c *csi.VolumeCapability) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging, VolumeCapability: c, Secrets: secrets(), VolumeContext: maps.Clone(e.vc)}
}

func (e *nodeEnv) stage(t *testing.T, c *csi.VolumeCapability) {
	t.Helper()
	if _, err := e.d.NodeStageVolume(context.Background(), e.stageReq(c)); err != nil {
		t.Fatalf("stage: %v", err)
	}
}

func (e *nodeEnv) publishReq(target string, c *csi.VolumeCapability) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging, TargetPath: target, VolumeCapability: c, VolumeContext: maps.Clone(e.vc)}
}

func (e *nodeEnv) publish(t *testing.T, target string, c *csi.VolumeCapability) {
	t.Helper()
	if _, err := e.d.NodePublishVolume(context.Background(), e.publishReq(target, c)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func (e *nodeEnv) target(name string) string { return filepath.Join(e.dir, "pods", name, "mount") }

func (e *nodeEnv) state(t *testing.T) *stageState {
	t.Helper()
	st, err := loadState(e.staging)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *nodeEnv) indexed() bool {
	_, ok := e.d.node.index.get(e.volID)
	return ok
}

// wantNothingStaged checks that no trace of a staging is left.
func (e *nodeEnv) wantNothingStaged(t *testing.T) {
	t.Helper()
	if st := e.state(t); st != nil {
		t.Errorf("state file left: %+v", st)
	}
	if e.indexed() {
		t.Error("volume index entry left")
	}
	if m := e.mnt.Mounted(); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if n := e.m.mappedCount(); n != 0 {
		t.Errorf("%d images still mapped", n)
	}
}

func fsCap(fsType string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

const (
	modeSNW = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	modeSSW = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	modeSMW = csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
	modeSRO = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	modeMMW = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
)

func mountOpts(t *testing.T, mnt *mounter.Fake, target string) (string, []string) {
	t.Helper()
	src, opts, err := mnt.MountInfo(target)
	if err != nil {
		t.Fatalf("%s is not mounted: %v", target, err)
	}
	return src, opts
}

// --- NodeStageVolume ---

func TestNodeStageVolumeRejectsBadRequests(t *testing.T) {
	const badKey = "s3cr3tNotBase64!"
	tests := []struct {
		name    string
		mutate  func(*csi.NodeStageVolumeRequest)
		mention []string
	}{
		{"missing volume id", func(r *csi.NodeStageVolumeRequest) { r.VolumeId = "" }, []string{"volume_id"}},
		{"missing staging path", func(r *csi.NodeStageVolumeRequest) { r.StagingTargetPath = "" }, []string{"staging_target_path"}},
		{"missing capability", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability = nil }, []string{"volume_capability"}},
		{"capability without access type", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.AccessType = nil }, []string{"access type"}},
		{"unsupported fs type", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.GetMount().FsType = "btrfs" }, []string{"btrfs"}},
		{"filesystem shared by several nodes", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.AccessMode.Mode = modeMMW }, []string{"block"}},
		{"mount flag that is an option switch", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.GetMount().MountFlags = []string{"-o"} }, []string{`"-o"`}},
		{"mount flag with a space", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.GetMount().MountFlags = []string{"rw x"} }, []string{`"rw x"`}},
		{"mount flag with a newline", func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability.GetMount().MountFlags = []string{"\n"} }, []string{"mount flag"}},
		{"empty mount flag", func(r *csi.NodeStageVolumeRequest) {
			r.VolumeCapability.GetMount().MountFlags = []string{"noatime", ""}
		}, []string{"mount flag"}},
		{"unknown mounter in context", func(r *csi.NodeStageVolumeRequest) { r.VolumeContext["mounter"] = "ceph-fuse" }, []string{"ceph-fuse"}},
		{"bad map options", func(r *csi.NodeStageVolumeRequest) { r.VolumeContext["mapOptions"] = "queue_depth=1 x" }, []string{"mapOptions"}},
		{"bad pool attribute", func(r *csi.NodeStageVolumeRequest) { r.VolumeContext["pool"] = "a/b" }, []string{"pool"}},
		{"no secrets", func(r *csi.NodeStageVolumeRequest) { r.Secrets = nil }, []string{"userID", "userKey"}},
		{"user without key", func(r *csi.NodeStageVolumeRequest) { delete(r.Secrets, "userKey") }, []string{"userKey"}},
		{"key without user", func(r *csi.NodeStageVolumeRequest) { delete(r.Secrets, "userID") }, []string{"userID"}},
		{"key that is not base64", func(r *csi.NodeStageVolumeRequest) { r.Secrets["userKey"] = badKey }, []string{"base64", "client.admin"}},
		{"key in the user field", func(r *csi.NodeStageVolumeRequest) { r.Secrets["userID"] = testKey + " " }, []string{"userID"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			req := e.stageReq(fsCap("ext4", modeSNW))
			tc.mutate(req)
			_, err := e.d.NodeStageVolume(context.Background(), req)
			wantCode(t, err, codes.InvalidArgument, tc.mention...)
			for _, secret := range []string{testKey, badKey, "s3cr3t"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q prints the key", err)
				}
			}
			if e.m.mapCalls() != 0 {
				t.Error("a rejected request reached the mapper")
			}
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeStageVolumeWithoutStagingDirectoryIsFailedPrecondition(t *testing.T) {
	e := newNodeEnv(t)
	req := e.stageReq(fsCap("ext4", modeSNW))
	req.StagingTargetPath = filepath.Join(e.dir, "absent")
	_, err := e.d.NodeStageVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition, "absent")
	if e.m.mapCalls() != 0 {
		t.Error("mapped without a staging directory")
	}
}

func TestNodeStageVolumeOfMissingImageIsNotFound(t *testing.T) {
	gonePool, err := volid.ID{ClusterID: clusterID, PoolID: 99, Image: "csi-vol-00000000000000000000000000000000"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(e *nodeEnv, r *csi.NodeStageVolumeRequest)
	}{
		{"image named by the context does not exist", func(_ *nodeEnv, r *csi.NodeStageVolumeRequest) {
			r.VolumeContext["imageName"] = "csi-vol-00000000000000000000000000000000"
		}},
		{"image deleted behind the driver", func(e *nodeEnv, r *csi.NodeStageVolumeRequest) {
			if _, err := e.ceph.TrashImage(context.Background(), ceph.Credentials{User: "admin", Key: testKey}, e.ref); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign volume id without context", func(_ *nodeEnv, r *csi.NodeStageVolumeRequest) { r.VolumeId, r.VolumeContext = "pvc-123", nil }},
		{"pool of the volume id is gone", func(_ *nodeEnv, r *csi.NodeStageVolumeRequest) { r.VolumeId, r.VolumeContext = gonePool, nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			req := e.stageReq(fsCap("ext4", modeSNW))
			tc.mutate(e, req)
			_, err := e.d.NodeStageVolume(context.Background(), req)
			wantCode(t, err, codes.NotFound)
			if e.m.mapCalls() != 0 {
				t.Error("a missing image was mapped")
			}
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeStageVolumeResolvesTheImageFromTheVolumeID(t *testing.T) {
	e := newNodeEnv(t)
	req := e.stageReq(fsCap("ext4", modeSNW))
	req.VolumeContext = nil
	if _, err := e.d.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if e.m.mapCalls() != 1 {
		t.Fatalf("%d maps", e.m.mapCalls())
	}
	if got := e.m.images[0]; got.Pool != testPool || got.Name != e.ref.Name || got.User != "admin" || got.Key != testKey {
		t.Fatalf("mapped %s as %s", got.Spec(), got.User)
	}
}

// Two clusters may have the same pool and image names: the mapper gets the
// cluster's fsid so that it never takes the other's mapping for this one.
func TestNodeStageVolumeMapsWithTheClusterFSID(t *testing.T) {
	e := newNodeEnv(t)
	if _, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW))); err != nil {
		t.Fatal(err)
	}
	if got := e.m.images[0].ClusterFSID; got != cephfake.FakeFSID {
		t.Fatalf("mapped with cluster fsid %q, want %q", got, cephfake.FakeFSID)
	}
}

// A stage needs the image's features and image-meta, which its header
// answers in two reads; opening the image would cost several round trips
// more on every pod start.
func TestNodeStageVolumeReadsTheHeaderWithoutOpeningTheImage(t *testing.T) {
	e := newNodeEnv(t)
	opens := e.ceph.Calls["stat"]
	if _, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW))); err != nil {
		t.Fatal(err)
	}
	if got := e.ceph.Calls["stat"] - opens; got != 0 {
		t.Errorf("the stage opened the image %d times, want 0", got)
	}
	info, err := e.ceph.StatImage(context.Background(), adminCreds(), e.ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.m.images[0].Features; got != info.Features || got == 0 {
		t.Errorf("mapped with features %v, the image has %v", got, info.Features)
	}
}

// A volume whose image was never written where a filesystem signature
// would be is formatted without probing its device first; anything Ceph
// cannot vouch for (a clone, an image ever written) is probed, and read-only
// and block volumes are never formatted.
func TestNodeStageVolumeSkipsTheProbeOnlyForImagesNeverWritten(t *testing.T) {
	tests := []struct {
		name                string
		blank               bool
		c                   *csi.VolumeCapability
		wantBlank, wantMkfs int
	}{
		{"a never-written image is formatted without a probe", true, fsCap("ext4", modeSNW), 1, 1},
		{"an image Ceph reports written is probed first", false, fsCap("ext4", modeSNW), 0, 1},
		{"a block volume is never formatted", true, blockCap(modeSNW), 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.ceph.Blank = map[string]bool{e.ref.Name: tc.blank}
			if _, err := e.d.NodeStageVolume(context.Background(), e.stageReq(tc.c)); err != nil {
				t.Fatal(err)
			}
			if e.mnt.BlankFormats != tc.wantBlank || e.mnt.Formatted != tc.wantMkfs {
				t.Fatalf("formats without a probe %d, mkfs runs %d; want %d and %d", e.mnt.BlankFormats, e.mnt.Formatted, tc.wantBlank, tc.wantMkfs)
			}
		})
	}
}

// Two nodes that pass the watcher check at the same moment both map: the
// check after the map sees the other client, and the stage backs out,
// leaving nothing mapped or staged.
func TestNodeStageVolumeBacksOutWhenAnotherClientMappedAtTheSameMoment(t *testing.T) {
	tests := []struct {
		name    string
		capab   *csi.VolumeCapability
		clients int // after the map: this node's and another's, or this node's alone
		allowed bool
	}{
		{"single-node writer filesystem with a second client backs out", fsCap("ext4", modeSNW), 2, false},
		{"single-node writer block with a second client backs out", blockCap(modeSNW), 2, false},
		{"single-node writer filesystem as the only client is staged", fsCap("ext4", modeSNW), 1, true},
		{"read-only filesystem with a second client is staged", fsCap("ext4", modeSRO), 2, true},
		{"multi-node multi-writer block with a second client is staged", blockCap(modeMMW), 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.m.onMap = func(mapper.Image) {
				ws := []ceph.Watcher{{Addr: "10.0.0.9:0/9", Client: 9}, {Addr: "10.1.2.3:0/42", Client: 4711}}
				e.ceph.SetWatchers(e.ref, ws[:tc.clients])
			}
			_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(tc.capab))
			if tc.allowed {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, codes.FailedPrecondition, "2 clients", "another node mapped it")
			e.wantNothingStaged(t)
		})
	}
}

// A stage that backs out right after its map finds the device held for a
// moment by udev's probe: the rollback tries again, and nothing is left.
func TestNodeStageRollbackRetriesADeviceBusyForAMoment(t *testing.T) {
	e := newNodeEnv(t)
	e.m.onMap = func(mapper.Image) {
		e.ceph.SetWatchers(e.ref, []ceph.Watcher{{Addr: "10.0.0.9:0/9", Client: 9}, {Addr: "10.1.2.3:0/42", Client: 4711}})
	}
	e.m.unmapBusy = 3
	_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
	wantCode(t, err, codes.FailedPrecondition, "another node mapped it")
	e.wantNothingStaged(t)
	if n := len(e.m.unmapped); n != 4 {
		t.Fatalf("%d unmap attempts, want 3 busy ones and the one that worked", n)
	}
}

func TestNodeStageUndoesAMapThatDidNotWaitForTheClientCheck(t *testing.T) {
	e := newNodeEnv(t)
	e.m.ignoreProceed = true
	e.ceph.SetWatchers(e.ref, []ceph.Watcher{{Addr: "10.1.2.3:0/42", Client: 4711}})
	_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
	wantCode(t, err, codes.FailedPrecondition, "4711")
	if n := len(e.m.unmapCalls()); n != 1 {
		t.Errorf("%d unmaps of the mapping made before the verdict, want 1", n)
	}
	e.wantNothingStaged(t)
}

func TestNodeStageVolumeOfImageOpenElsewhere(t *testing.T) {
	tests := []struct {
		name    string
		capab   *csi.VolumeCapability
		allowed bool
	}{
		{"single-node writer filesystem is refused", fsCap("ext4", modeSNW), false},
		{"single-node single-writer filesystem is refused", fsCap("ext4", modeSSW), false},
		{"single-node multi-writer block is refused", blockCap(modeSMW), false},
		{"single-node writer block is refused", blockCap(modeSNW), false},
		{"read-only filesystem is allowed", fsCap("ext4", modeSRO), true},
		{"read-only block is allowed", blockCap(modeSRO), true},
		{"multi-node multi-writer block is allowed", blockCap(modeMMW), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.ceph.SetWatchers(e.ref, []ceph.Watcher{{Addr: "10.1.2.3:0/42", Client: 4711}})
			_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(tc.capab))
			if tc.allowed {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, codes.FailedPrecondition, "4711", "10.1.2.3")
			if e.m.mapCalls() != 0 {
				t.Error("an image in use elsewhere was mapped")
			}
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeStageVolumeFormatsAndMountsFilesystems(t *testing.T) {
	tests := []struct {
		name      string
		capab     *csi.VolumeCapability
		wantFS    string
		wantOpts  []string
		avoidOpts []string
		readOnly  bool
	}{
		{"empty fs type means ext4", fsCap("", modeSNW), "ext4", nil, []string{"nouuid", "ro"}, false},
		{"ext4", fsCap("ext4", modeSNW), "ext4", nil, []string{"nouuid", "ro"}, false},
		{"xfs mounts with nouuid", fsCap("xfs", modeSNW), "xfs", []string{"nouuid"}, []string{"ro"}, false},
		{"mount flags are used", fsCap("ext4", modeSNW, "noatime", "discard"), "ext4", []string{"noatime", "discard"}, []string{"ro"}, false},
		{"read-only mode maps and mounts read-only", fsCap("ext4", modeSRO), "ext4", []string{"ro"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, tc.capab)
			if fs, _ := e.mnt.Format(context.Background(), e.devPath()); fs != tc.wantFS || e.mnt.Formatted != 1 {
				t.Errorf("device holds %q after %d mkfs runs, want %q after 1", fs, e.mnt.Formatted, tc.wantFS)
			}
			src, opts := mountOpts(t, e.mnt, e.staging)
			if src != e.devPath() {
				t.Errorf("staging path mounts %s, want %s", src, e.devPath())
			}
			for _, o := range tc.wantOpts {
				if !slices.Contains(opts, o) {
					t.Errorf("mount options %v lack %q", opts, o)
				}
			}
			for _, o := range tc.avoidOpts {
				if slices.Contains(opts, o) {
					t.Errorf("mount options %v have %q", opts, o)
				}
			}
			if e.m.opts[0].ReadOnly != tc.readOnly {
				t.Errorf("mapped read-only=%v, want %v", e.m.opts[0].ReadOnly, tc.readOnly)
			}
			st := e.state(t)
			if st == nil || st.Device == nil || !st.Mounted || st.FsType != tc.wantFS || st.Block || st.ReadOnly != tc.readOnly {
				t.Errorf("state %+v", st)
			}
			if !e.indexed() {
				t.Error("volume not in the index")
			}
		})
	}
}

func TestNodeStageVolumeFormatsADeviceOnlyOnce(t *testing.T) {
	t.Run("second staging of the same device", func(t *testing.T) {
		e := newNodeEnv(t)
		e.stage(t, fsCap("ext4", modeSNW))
		if _, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}); err != nil {
			t.Fatal(err)
		}
		e.stage(t, fsCap("ext4", modeSNW))
		if e.m.mapCalls() != 2 || e.mnt.Formatted != 1 {
			t.Fatalf("%d maps, %d mkfs runs; want 2 maps, 1 mkfs", e.m.mapCalls(), e.mnt.Formatted)
		}
	})
	t.Run("device that already holds the filesystem", func(t *testing.T) {
		e := newNodeEnv(t)
		e.mnt.SetFormat(e.devPath(), "xfs")
		e.stage(t, fsCap("xfs", modeSNW))
		if e.mnt.Formatted != 0 {
			t.Fatalf("%d mkfs runs over an existing filesystem", e.mnt.Formatted)
		}
	})
}

func TestNodeStageVolumeOfBlockVolumeMapsWithoutMounting(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, blockCap(modeSNW))
	if m := e.mnt.Mounted(); len(m) != 0 || e.mnt.Formatted != 0 {
		t.Fatalf("block staging mounted %v and formatted %d times", m, e.mnt.Formatted)
	}
	st := e.state(t)
	if st == nil || !st.Block || st.Device == nil || st.Device.Path != e.devPath() || st.Mounted {
		t.Fatalf("state %+v", st)
	}
	if !e.m.isMapped(e.spec()) {
		t.Fatal("image not mapped")
	}
}

func TestNodeStageVolumeRepeatIsIdempotent(t *testing.T) {
	tests := []struct {
		name          string
		first, second *csi.VolumeCapability
	}{
		{"filesystem", fsCap("ext4", modeSNW), fsCap("ext4", modeSNW)},
		{"empty fs type after ext4", fsCap("ext4", modeSNW), fsCap("", modeSNW)},
		{"block", blockCap(modeSNW), blockCap(modeSNW)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, tc.first)
			// The volume is now open by this node: a repeat must not
			// take its own watch for another client's.
			e.ceph.SetWatchers(e.ref, []ceph.Watcher{{Addr: "10.0.0.1:0/1", Client: 1}})
			e.stage(t, tc.second)
			if e.m.mapCalls() != 1 || e.mnt.Formatted > 1 {
				t.Fatalf("repeat mapped %d times, formatted %d times", e.m.mapCalls(), e.mnt.Formatted)
			}
		})
	}
}

func TestNodeStageVolumeRepeatWithOtherCapabilityIsAlreadyExists(t *testing.T) {
	tests := []struct {
		name          string
		first, second *csi.VolumeCapability
	}{
		{"other fs type", fsCap("ext4", modeSNW), fsCap("xfs", modeSNW)},
		{"block after filesystem", fsCap("ext4", modeSNW), blockCap(modeSNW)},
		{"filesystem after block", blockCap(modeSNW), fsCap("ext4", modeSNW)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, tc.first)
			before := e.mnt.Mounted()
			_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(tc.second))
			wantCode(t, err, codes.AlreadyExists, e.volID)
			if !e.m.isMapped(e.spec()) || !slices.Equal(e.mnt.Mounted(), before) || e.state(t) == nil {
				t.Fatal("the refused repeat disturbed the staged volume")
			}
		})
	}
}

func TestNodeStageVolumeMapperErrorsKeepTheirCodeAndRollBack(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{mapper.ErrUnsupportedFeatures, codes.FailedPrecondition},
		{mapper.ErrClusterIncompatible, codes.FailedPrecondition},
		{mapper.ErrImageNotFound, codes.NotFound},
		{mapper.ErrAccessDenied, codes.PermissionDenied},
		{mapper.ErrMapTimeout, codes.DeadlineExceeded},
		{mapper.ErrInvalidOptions, codes.InvalidArgument},
		{mapper.ErrMapFailed, codes.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			e := newNodeEnv(t)
			err := fmt.Errorf("%w: details", tc.err)
			if c := status.Code(statusOf(err, "")); c != tc.code {
				t.Fatalf("statusOf says %v, test expects %v", c, tc.code)
			}
			e.m.mapErr = err
			_, err = e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
			wantCode(t, err, tc.code, "details")
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeStageVolumeRollsBackAFailedMount(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *nodeEnv)
		code  codes.Code
	}{
		{"mount fails", func(e *nodeEnv) { e.mnt.FailMount = errors.New("mount: wrong fs type") }, codes.Internal},
		{"device holds another filesystem", func(e *nodeEnv) { e.mnt.SetFormat(e.devPath(), "xfs") }, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			tc.setup(e)
			_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
			wantCode(t, err, tc.code)
			if e.m.mapCalls() != 1 {
				t.Fatalf("%d maps, want 1", e.m.mapCalls())
			}
			if u := e.m.unmapCalls(); len(u) != 1 || u[0].Path != e.devPath() {
				t.Errorf("unmapped %v, want the mapped device", u)
			}
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeStageVolumeStateFileHoldsNoSecret(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	data, err := os.ReadFile(e.staging + ".rbd-csi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), e.devPath()) || !strings.Contains(string(data), e.ref.Name) {
		t.Fatalf("state file does not record the device and image: %s", data)
	}
	for _, s := range []string{testKey, "userKey", "secret"} {
		if strings.Contains(string(data), s) {
			t.Errorf("state file holds %q:\n%s", s, data)
		}
	}
	files, _ := filepath.Glob(filepath.Join(e.opts.Node.StateDir, "*", "*"))
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), testKey) {
			t.Errorf("%s holds the key", f)
		}
	}
}

// --- NodePublishVolume ---

func TestNodePublishVolumeRejectsBadRequests(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*csi.NodePublishVolumeRequest)
		mention string
	}{
		{"missing volume id", func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }, "volume_id"},
		{"missing staging path", func(r *csi.NodePublishVolumeRequest) { r.StagingTargetPath = "" }, "staging_target_path"},
		{"missing target", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }, "target_path"},
		{"missing capability", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }, "volume_capability"},
		{"bad mount flag", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.GetMount().MountFlags = []string{"-o"} }, `"-o"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, fsCap("ext4", modeSNW))
			req := e.publishReq(e.target("a"), fsCap("ext4", modeSNW))
			tc.mutate(req)
			_, err := e.d.NodePublishVolume(context.Background(), req)
			wantCode(t, err, codes.InvalidArgument, tc.mention)
		})
	}
}

func TestNodePublishVolumeOfUnstagedVolumeIsFailedPrecondition(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, e *nodeEnv)
	}{
		{"never staged", func(*testing.T, *nodeEnv) {}},
		{"staging died before the device was recorded", func(t *testing.T, e *nodeEnv) {
			st := &stageState{VolumeID: e.volID, Mapper: "fake", StagingPath: e.staging, Image: stageImage{Pool: testPool, Name: e.ref.Name}}
			if err := st.save(); err != nil {
				t.Fatal(err)
			}
		}},
		{"another volume staged there", func(t *testing.T, e *nodeEnv) {
			st := &stageState{VolumeID: "other", Mapper: "fake", StagingPath: e.staging, Device: &mapper.Device{Path: e.devPath(), Mapper: "fake"}, Mounted: true}
			if err := st.save(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			tc.setup(t, e)
			_, err := e.d.NodePublishVolume(context.Background(), e.publishReq(e.target("a"), fsCap("ext4", modeSNW)))
			wantCode(t, err, codes.FailedPrecondition, "NodeStageVolume")
			if m := e.mnt.Mounted(); len(m) != 0 {
				t.Fatalf("mounted %v", m)
			}
		})
	}
}

func TestNodePublishVolumeBindMountsTheStagedFilesystem(t *testing.T) {
	tests := []struct {
		name     string
		mode     csi.VolumeCapability_AccessMode_Mode
		readonly bool
		wantRO   bool
	}{
		{"writable", modeSNW, false, false},
		{"readonly publish", modeSNW, true, true},
		{"read-only volume", modeSRO, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, fsCap("ext4", tc.mode))
			target := e.target("a")
			req := e.publishReq(target, fsCap("ext4", tc.mode, "noatime"))
			req.Readonly = tc.readonly
			if _, err := e.d.NodePublishVolume(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			src, opts := mountOpts(t, e.mnt, target)
			if src != e.staging || !slices.Contains(opts, "bind") || !slices.Contains(opts, "noatime") {
				t.Errorf("target mounts %s with %v, want a bind of %s with noatime", src, opts, e.staging)
			}
			if slices.Contains(opts, "ro") != tc.wantRO {
				t.Errorf("options %v, want ro=%v", opts, tc.wantRO)
			}
			if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
				t.Errorf("target is not a directory: %v", err)
			}
			if st := e.state(t); !slices.Equal(st.Targets, []string{target}) {
				t.Errorf("state targets %v", st.Targets)
			}
		})
	}
}

func TestNodePublishVolumeOfBlockVolumeBindsTheDevice(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, blockCap(modeSNW))
	target := filepath.Join(e.dir, "pods", "a", "volumeDevices", "pvc")
	e.publish(t, target, blockCap(modeSNW))
	fi, err := os.Stat(target)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("block target is not a file: %v", err)
	}
	if src, opts := mountOpts(t, e.mnt, target); src != e.devPath() || !slices.Contains(opts, "bind") {
		t.Fatalf("target mounts %s with %v, want a bind of %s", src, opts, e.devPath())
	}
}

func TestNodePublishVolumeRepeatIsIdempotent(t *testing.T) {
	for _, c := range []*csi.VolumeCapability{fsCap("ext4", modeSSW), blockCap(modeSSW)} {
		t.Run(fmt.Sprintf("block=%v", c.GetBlock() != nil), func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, c)
			e.publish(t, e.target("a"), c)
			e.mnt.FailMount = errors.New("mounted again") // a repeat must not mount
			e.publish(t, e.target("a"), c)
			if st := e.state(t); len(st.Targets) != 1 {
				t.Fatalf("targets %v", st.Targets)
			}
		})
	}
}

func TestNodePublishVolumeSecondTargetDependsOnAccessMode(t *testing.T) {
	tests := []struct {
		name  string
		capab *csi.VolumeCapability
		ok    bool
	}{
		{"single-node single-writer is refused", fsCap("ext4", modeSSW), false},
		{"single-node single-writer block is refused", blockCap(modeSSW), false},
		{"single-node multi-writer is allowed", fsCap("ext4", modeSMW), true},
		{"single-node writer is allowed", fsCap("ext4", modeSNW), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, tc.capab)
			e.publish(t, e.target("a"), tc.capab)
			_, err := e.d.NodePublishVolume(context.Background(), e.publishReq(e.target("b"), tc.capab))
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if st := e.state(t); len(st.Targets) != 2 {
					t.Fatalf("targets %v", st.Targets)
				}
				return
			}
			wantCode(t, err, codes.FailedPrecondition, "SINGLE_NODE_SINGLE_WRITER", e.target("a"))
			if _, _, err := e.mnt.MountInfo(e.target("b")); err == nil {
				t.Fatal("second target mounted")
			}
		})
	}
}

func TestNodePublishVolumeWithOtherAccessTypeThanStagedIsInvalid(t *testing.T) {
	tests := []struct {
		name           string
		staged, wanted *csi.VolumeCapability
	}{
		{"block publish of a filesystem", fsCap("ext4", modeSNW), blockCap(modeSNW)},
		{"filesystem publish of a block volume", blockCap(modeSNW), fsCap("ext4", modeSNW)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, tc.staged)
			_, err := e.d.NodePublishVolume(context.Background(), e.publishReq(e.target("a"), tc.wanted))
			wantCode(t, err, codes.InvalidArgument, "block")
		})
	}
}

// --- NodeUnpublishVolume ---

func TestNodeUnpublishVolumeUnmountsAndRemovesTheTarget(t *testing.T) {
	for _, c := range []*csi.VolumeCapability{fsCap("ext4", modeSMW), blockCap(modeSMW)} {
		t.Run(fmt.Sprintf("block=%v", c.GetBlock() != nil), func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, c)
			e.publish(t, e.target("a"), c)
			e.publish(t, e.target("b"), c)
			if _, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: e.volID, TargetPath: e.target("a")}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(e.target("a")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("target still there: %v", err)
			}
			if slices.Contains(e.mnt.Mounted(), e.target("a")) || !slices.Contains(e.mnt.Mounted(), e.target("b")) {
				t.Errorf("mounts after unpublish: %v", e.mnt.Mounted())
			}
			if c.GetMount() != nil && !slices.Contains(e.mnt.Mounted(), e.staging) {
				t.Error("unpublish unmounted the staging path")
			}
			if st := e.state(t); !slices.Equal(st.Targets, []string{e.target("b")}) {
				t.Errorf("state targets %v, want only the other target", st.Targets)
			}
		})
	}
}

func TestNodeUnpublishVolumeOfMissingTargetSucceeds(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	e.publish(t, e.target("a"), fsCap("ext4", modeSNW))
	for _, target := range []string{e.target("a"), e.target("a"), e.target("never")} {
		if _, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: e.volID, TargetPath: target}); err != nil {
			t.Fatalf("unpublish %s: %v", target, err)
		}
	}
	// Nothing staged at all is no error either.
	if _, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "unknown", TargetPath: e.target("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestNodeUnpublishVolumeRejectsBadRequests(t *testing.T) {
	e := newNodeEnv(t)
	_, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{TargetPath: e.target("a")})
	wantCode(t, err, codes.InvalidArgument, "volume_id")
	_, err = e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: e.volID})
	wantCode(t, err, codes.InvalidArgument, "target_path")
}

// --- NodeUnstageVolume ---

func unstageReq(e *nodeEnv) *csi.NodeUnstageVolumeRequest {
	return &csi.NodeUnstageVolumeRequest{VolumeId: e.volID, StagingTargetPath: e.staging}
}

func TestNodeUnstageVolumeUnmountsUnmapsAndForgets(t *testing.T) {
	for _, c := range []*csi.VolumeCapability{fsCap("ext4", modeSNW), blockCap(modeSNW)} {
		t.Run(fmt.Sprintf("block=%v", c.GetBlock() != nil), func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, c)
			if _, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
				t.Fatal(err)
			}
			if u := e.m.unmapCalls(); len(u) != 1 || u[0].Path != e.devPath() {
				t.Errorf("unmapped %v, want the staged device", u)
			}
			e.wantNothingStaged(t)
		})
	}
}

func TestNodeUnstageVolumeOfUnstagedVolumeSucceeds(t *testing.T) {
	e := newNodeEnv(t)
	if _, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
		t.Fatalf("never staged: %v", err)
	}
	e.stage(t, fsCap("ext4", modeSNW))
	for i := range 2 {
		if _, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
			t.Fatalf("unstage %d: %v", i, err)
		}
	}
	if n := len(e.m.unmapCalls()); n != 1 {
		t.Fatalf("%d unmaps, want 1", n)
	}
	e.wantNothingStaged(t)
}

func TestNodeUnstageVolumeRejectsBadRequests(t *testing.T) {
	e := newNodeEnv(t)
	_, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{StagingTargetPath: e.staging})
	wantCode(t, err, codes.InvalidArgument, "volume_id")
	_, err = e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: e.volID})
	wantCode(t, err, codes.InvalidArgument, "staging_target_path")
	e.stage(t, fsCap("ext4", modeSNW))
	_, err = e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "other", StagingTargetPath: e.staging})
	wantCode(t, err, codes.FailedPrecondition, e.volID)
	if !e.m.isMapped(e.spec()) || e.state(t) == nil {
		t.Fatal("unstage of another volume ID tore this one down")
	}
}

func TestNodeUnstageVolumeAfterPluginRestartFindsTheDevice(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	// The new process has the same state directory and kernel mount table,
	// and a mapper that remembers nothing.
	m2 := newFakeMapper(t, e.dir)
	d2 := e.restart(t, m2, e.mnt)
	if _, err := d2.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
		t.Fatal(err)
	}
	u := m2.unmapCalls()
	if len(u) != 1 || u[0].Path != e.devPath() || u[0].Attrs[mapper.AttrImage] != e.ref.Name {
		t.Fatalf("unmapped %v, want %s", u, e.devPath())
	}
	if m := e.mnt.Mounted(); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if e.state(t) != nil || e.indexed() {
		t.Error("state or index entry left")
	}
}

func TestNodeUnstageVolumeWithoutRecordedDeviceUnmapsByImage(t *testing.T) {
	tests := []struct {
		name     string
		unmapErr error
	}{
		{"mapper finds the mapping", nil},
		{"mapper fails to unmap", fmt.Errorf("%w: remove: I/O error", mapper.ErrUnmapFailed)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			// The plugin died between Map and recording the device.
			if _, err := e.m.Map(context.Background(), mapper.Image{Pool: testPool, Name: e.ref.Name}, mapper.MapOptions{}); err != nil {
				t.Fatal(err)
			}
			st := &stageState{VolumeID: e.volID, Mapper: "fake", StagingPath: e.staging, FsType: "ext4", Image: stageImage{ClusterID: clusterID, Pool: testPool, Name: e.ref.Name}}
			if err := st.save(); err != nil {
				t.Fatal(err)
			}
			e.m.unmapErr = tc.unmapErr
			_, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e))
			if tc.unmapErr != nil {
				// The state is all that names the mapping: it must stay for the retry.
				wantCode(t, err, codes.Internal, "I/O error")
				if e.state(t) == nil {
					t.Fatal("state dropped although the mapping could not be removed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := e.m.unmapCalls()
			if len(u) != 1 || u[0].Mapper != "fake" || u[0].Attrs[mapper.AttrPool] != testPool || u[0].Attrs[mapper.AttrImage] != e.ref.Name {
				t.Fatalf("unmap calls %+v, want one naming %s", u, e.spec())
			}
			if e.m.isMapped(e.spec()) {
				t.Error("mapping left")
			}
			if e.state(t) != nil {
				t.Error("state file left")
			}
		})
	}
}

func TestNodeUnstageVolumeOfBusyDeviceKeepsTheState(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	e.m.unmapErr = fmt.Errorf("%w: /dev/rbd0 is held open", mapper.ErrDeviceBusy)
	_, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e))
	wantCode(t, err, codes.FailedPrecondition, "held open")
	if st := e.state(t); st == nil || st.Device == nil || st.Device.Path != e.devPath() {
		t.Fatalf("state after a busy unmap: %+v", st)
	}
	if !e.indexed() {
		t.Error("index entry dropped")
	}
	e.m.unmapErr = nil
	if _, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
		t.Fatalf("retry: %v", err)
	}
	e.wantNothingStaged(t)
}

// --- NodeGetVolumeStats and NodeGetVolumeHealth ---

// legacyCondition decodes field 2 of the marshalled response, the
// pre-1.13 VolumeCondition {bool abnormal = 1; string message = 2}.
func legacyCondition(t *testing.T, resp *csi.NodeGetVolumeStatsResponse) (abnormal bool, msg string) {
	t.Helper()
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if num != 2 {
			b = b[protowire.ConsumeFieldValue(num, typ, b):]
			continue
		}
		if typ != protowire.BytesType {
			t.Fatalf("field 2 has wire type %v", typ)
		}
		cond, n := protowire.ConsumeBytes(b)
		if n < 0 {
			t.Fatal("bad volume condition")
		}
		b, found = b[n:], true
		for len(cond) > 0 {
			cnum, ctyp, n := protowire.ConsumeTag(cond)
			if n < 0 {
				t.Fatal("bad condition tag")
			}
			cond = cond[n:]
			switch {
			case cnum == 1 && ctyp == protowire.VarintType:
				v, n := protowire.ConsumeVarint(cond)
				abnormal, cond = v != 0, cond[n:]
			case cnum == 2 && ctyp == protowire.BytesType:
				s, n := protowire.ConsumeString(cond)
				msg, cond = s, cond[n:]
			default:
				t.Fatalf("unexpected condition field %d", cnum)
			}
		}
	}
	if !found {
		t.Fatal("response carries no volume condition")
	}
	return abnormal, msg
}

func TestNodeGetVolumeStatsOfUnknownPaths(t *testing.T) {
	e := newNodeEnv(t)
	unmounted := filepath.Join(e.dir, "plain")
	if err := os.Mkdir(unmounted, 0o750); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *csi.NodeGetVolumeStatsRequest
		code codes.Code
	}{
		{"missing volume id", &csi.NodeGetVolumeStatsRequest{VolumePath: unmounted}, codes.InvalidArgument},
		{"missing volume path", &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID}, codes.InvalidArgument},
		{"path does not exist", &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID, VolumePath: filepath.Join(e.dir, "gone")}, codes.NotFound},
		{"path is not mounted", &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID, VolumePath: unmounted}, codes.NotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.d.NodeGetVolumeStats(context.Background(), tc.req)
			wantCode(t, err, tc.code)
		})
	}
}

func TestNodeGetVolumeStatsReportsBytesAndInodes(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	e.publish(t, e.target("a"), fsCap("ext4", modeSNW))
	resp, err := e.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging})
	if err != nil {
		t.Fatal(err)
	}
	units := map[csi.VolumeUsage_Unit]*csi.VolumeUsage{}
	for _, u := range resp.Usage {
		units[u.Unit] = u
	}
	for _, unit := range []csi.VolumeUsage_Unit{csi.VolumeUsage_BYTES, csi.VolumeUsage_INODES} {
		u := units[unit]
		if u == nil || u.Total <= 0 || u.Used < 0 || u.Available < 0 || u.Used > u.Total || u.Available > u.Total {
			t.Errorf("%v usage %v", unit, u)
		}
	}
	if abnormal, msg := legacyCondition(t, resp); abnormal || msg != "volume is healthy" {
		t.Errorf("condition abnormal=%v %q", abnormal, msg)
	}
}

// remountReadOnly makes the staging mount look like the kernel remounted it
// read-only after I/O errors.
func remountReadOnly(t *testing.T, e *nodeEnv) {
	t.Helper()
	src, opts := mountOpts(t, e.mnt, e.staging)
	if err := e.mnt.Mount(context.Background(), src, e.staging, "", append(slices.Clone(opts), "ro")); err != nil {
		t.Fatal(err)
	}
}

// healthCases are the volume conditions NodeGetVolumeStats and
// NodeGetVolumeHealth must both report.
var healthCases = []struct {
	name      string
	mode      csi.VolumeCapability_AccessMode_Mode
	setup     func(t *testing.T, e *nodeEnv)
	viaIndex  bool
	wantIssue string
}{
	{"healthy", modeSNW, func(*testing.T, *nodeEnv) {}, false, ""},
	{"healthy found through the index", modeSNW, func(*testing.T, *nodeEnv) {}, true, ""},
	{"mapping lost", modeSNW, func(_ *testing.T, e *nodeEnv) { e.m.sick = "rbd0 vanished" }, false, "rbd0 vanished"},
	{"mapping lost found through the index", modeSNW, func(_ *testing.T, e *nodeEnv) { e.m.sick = "rbd0 vanished" }, true, "rbd0 vanished"},
	{"writable filesystem remounted read-only", modeSNW, remountReadOnly, false, "read-only"},
	{"read-only volume mounted read-only", modeSRO, remountReadOnly, false, ""},
}

func TestNodeGetVolumeStatsVolumeCondition(t *testing.T) {
	for _, tc := range healthCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, fsCap("ext4", tc.mode))
			e.publish(t, e.target("a"), fsCap("ext4", tc.mode))
			tc.setup(t, e)
			req := &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging}
			if tc.viaIndex {
				req.StagingTargetPath = ""
			}
			resp, err := e.d.NodeGetVolumeStats(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			abnormal, msg := legacyCondition(t, resp)
			if abnormal != (tc.wantIssue != "") || !strings.Contains(msg, tc.wantIssue) {
				t.Fatalf("condition abnormal=%v %q, want issue %q", abnormal, msg, tc.wantIssue)
			}
		})
	}
}

func TestNodeGetVolumeHealth(t *testing.T) {
	t.Run("missing volume id", func(t *testing.T) {
		e := newNodeEnv(t)
		_, err := e.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{})
		wantCode(t, err, codes.InvalidArgument, "volume_id")
	})
	t.Run("unstaged volume has no issue", func(t *testing.T) {
		e := newNodeEnv(t)
		resp, err := e.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: e.volID})
		if err != nil || len(resp.VolumeHealth.HealthStatuses) != 0 {
			t.Fatalf("%v, %v", resp, err)
		}
	})
	for _, tc := range healthCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, fsCap("ext4", tc.mode))
			tc.setup(t, e)
			req := &csi.NodeGetVolumeHealthRequest{VolumeId: e.volID, StagingTargetPath: e.staging}
			if tc.viaIndex {
				req.StagingTargetPath = ""
			}
			resp, err := e.d.NodeGetVolumeHealth(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			h := resp.VolumeHealth
			if h.VolumeId != e.volID {
				t.Errorf("health of %q", h.VolumeId)
			}
			if tc.wantIssue == "" {
				if len(h.HealthStatuses) != 0 {
					t.Fatalf("healthy volume reports %v", h.HealthStatuses)
				}
				return
			}
			if len(h.HealthStatuses) != 1 || h.HealthStatuses[0].Status != csi.VolumeHealthErrorType_INACCESSIBLE || !strings.Contains(h.HealthStatuses[0].Message, tc.wantIssue) {
				t.Fatalf("health %v, want one entry about %q", h.HealthStatuses, tc.wantIssue)
			}
		})
	}
}

// --- NodeExpandVolume ---

func TestNodeExpandVolumeRejectsUnknownVolumes(t *testing.T) {
	e := newNodeEnv(t)
	_, err := e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumePath: e.target("a")})
	wantCode(t, err, codes.InvalidArgument, "volume_id")
	_, err = e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumeId: e.volID})
	wantCode(t, err, codes.InvalidArgument, "volume_path")
	_, err = e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.staging})
	wantCode(t, err, codes.NotFound, "not staged")
	_, err = e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.staging, StagingTargetPath: e.staging})
	wantCode(t, err, codes.NotFound, "not staged")
	e.stage(t, fsCap("ext4", modeSNW))
	_, err = e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.target("never")})
	wantCode(t, err, codes.NotFound, "never")
	if e.mnt.Resized != 0 {
		t.Fatal("resized on a refused request")
	}
}

func TestNodeExpandVolumeGrowsFilesystemsOnly(t *testing.T) {
	tests := []struct {
		name        string
		capab       *csi.VolumeCapability
		viaIndex    bool
		wantResized int
	}{
		{"filesystem", fsCap("ext4", modeSNW), false, 1},
		{"filesystem found through the index", fsCap("xfs", modeSNW), true, 1},
		{"block", blockCap(modeSNW), false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.m.devSize = 5 << 20
			e.stage(t, tc.capab)
			e.publish(t, e.target("a"), tc.capab)
			req := &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging, VolumeCapability: tc.capab}
			if tc.viaIndex {
				req.StagingTargetPath = ""
			}
			resp, err := e.d.NodeExpandVolume(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.CapacityBytes != 5<<20 || e.mnt.Resized != tc.wantResized {
				t.Fatalf("capacity %d after %d resizes, want %d after %d", resp.CapacityBytes, e.mnt.Resized, 5<<20, tc.wantResized)
			}
		})
	}
}

func TestNodeExpandVolumeRefreshesTheDeviceBeforeResizing(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		resized int
	}{
		{"refresh picks up the new size", nil, codes.OK, 1},
		{"refresh failure keeps its code", fmt.Errorf("%w: losetup -c", mapper.ErrDeviceBusy), codes.FailedPrecondition, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.m.devSize = 1 << 20
			rm := &refreshingMapper{fakeMapper: e.m, mnt: e.mnt, grow: 3 << 20, err: tc.err}
			e.d = e.restart(t, rm, e.mnt)
			e.stage(t, fsCap("ext4", modeSNW))
			e.publish(t, e.target("a"), fsCap("ext4", modeSNW))
			resp, err := e.d.NodeExpandVolume(context.Background(), &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging})
			wantCode(t, err, tc.code)
			if rm.refreshed != 1 || rm.resizedBefore != 0 || e.mnt.Resized != tc.resized {
				t.Fatalf("%d refreshes (after %d resizes), %d resizes in all", rm.refreshed, rm.resizedBefore, e.mnt.Resized)
			}
			if err == nil && resp.CapacityBytes != 3<<20 {
				t.Fatalf("capacity %d, want the refreshed %d", resp.CapacityBytes, 3<<20)
			}
		})
	}
}

func TestNodeExpandVolumeWaitsForTheDeviceToReachTheRequestedSize(t *testing.T) {
	e := newNodeEnv(t)
	e.m.devSize = 1 << 20
	e.stage(t, fsCap("ext4", modeSNW))
	e.publish(t, e.target("a"), fsCap("ext4", modeSNW))
	req := &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 20}}
	// The device never shows the new size (a mapper that has not seen the
	// resize): growing the filesystem would grow nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := e.d.NodeExpandVolume(ctx, req)
	wantCode(t, err, codes.Unavailable, "not picked up the new image size")
	if e.mnt.Resized != 0 {
		t.Fatal("resized a filesystem whose device had not grown")
	}
}

// --- Locks ---

func TestNodeCallsWaitForTheVolumeLockNoLongerThanTheirDeadline(t *testing.T) {
	e := newNodeEnv(t)
	unlock, err := e.d.locks.Lock(context.Background(), "node/"+e.volID)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	calls := map[string]func(ctx context.Context) error{
		"stage": func(ctx context.Context) error {
			_, err := e.d.NodeStageVolume(ctx, e.stageReq(fsCap("ext4", modeSNW)))
			return err
		},
		"unstage": func(ctx context.Context) error { _, err := e.d.NodeUnstageVolume(ctx, unstageReq(e)); return err },
		"publish": func(ctx context.Context) error {
			_, err := e.d.NodePublishVolume(ctx, e.publishReq(e.target("a"), fsCap("ext4", modeSNW)))
			return err
		},
		"unpublish": func(ctx context.Context) error {
			_, err := e.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: e.volID, TargetPath: e.target("a")})
			return err
		},
		"expand": func(ctx context.Context) error {
			_, err := e.d.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: e.volID, VolumePath: e.staging})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			wantCode(t, call(ctx), codes.Aborted, "in progress")
		})
	}
	if e.m.mapCalls() != 0 {
		t.Fatal("a call ran without the lock")
	}
	if n := e.d.locks.Held(); n != 1 {
		t.Fatalf("%d locks held, want only the test's own", n)
	}
}

// --- Regressions: defects these tests found in the node service, since fixed. ---

// After a node reboot the state file survives next to the staging path but
// nothing is mapped or mounted any more. A NodeStageVolume from kubelet must
// map and mount again; trusting the state file makes the later publish
// bind an empty directory, and the pod writes to the node's disk.
func TestNodeStageVolumeAfterNodeRebootMapsAndMountsAgain(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	mnt2 := mounter.NewFake()
	mnt2.SetFormat(e.devPath(), "ext4") // the disk keeps its filesystem
	m2 := newFakeMapper(t, e.dir)
	d2 := e.restart(t, m2, mnt2)
	if _, err := d2.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW))); err != nil {
		t.Fatal(err)
	}
	if m2.mapCalls() != 1 || !slices.Contains(mnt2.Mounted(), e.staging) {
		t.Fatalf("restage after reboot: %d maps, mounts %v; want the image mapped and mounted at %s", m2.mapCalls(), mnt2.Mounted(), e.staging)
	}
}

// A NodeUnstageVolume that unmounted the staging path and then found the
// device busy keeps the state file with Mounted still true. The next
// NodeStageVolume must mount again instead of reporting success.
func TestNodeStageVolumeAfterBusyUnstageMountsAgain(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW))
	e.m.unmapErr = fmt.Errorf("%w: held open", mapper.ErrDeviceBusy)
	_, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e))
	wantCode(t, err, codes.FailedPrecondition)
	e.m.unmapErr = nil
	e.stage(t, fsCap("ext4", modeSNW))
	if !slices.Contains(e.mnt.Mounted(), e.staging) {
		t.Fatalf("stage reported success but %s is not mounted (mounts %v)", e.staging, e.mnt.Mounted())
	}
}

// A Map refused because the image is already mapped differently on this
// node (here: read-write by another staging of the same image through a
// static volume) created nothing, so the rollback must not unmap the
// existing mapping that belongs to the other staging.
func TestNodeStageVolumeRollbackLeavesAnotherStagingsMappingAlone(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, blockCap(modeSNW))
	staging2 := filepath.Join(e.dir, "static-globalmount")
	if err := os.Mkdir(staging2, 0o750); err != nil {
		t.Fatal(err)
	}
	req := &csi.NodeStageVolumeRequest{
		VolumeId: "static-pv", StagingTargetPath: staging2, VolumeCapability: blockCap(modeSRO), Secrets: secrets(),
		VolumeContext: map[string]string{"clusterID": clusterID, "pool": testPool, "imageName": e.ref.Name},
	}
	_, err := e.d.NodeStageVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition, "read-only")
	if u := e.m.unmapCalls(); len(u) != 0 || !e.m.isMapped(e.spec()) {
		t.Fatalf("rollback of a refused map unmapped %+v; the first staging lost its device", u)
	}
}

// The recovery path for a staging that died between Map and recording the
// device hands the mapper a Device that names only the image. The real krbd
// mapper refuses such a Device with ErrInvalidDevice, which teardownStage
// swallows, so the state file goes while the kernel mapping stays.
func TestNodeUnstageVolumeWithoutRecordedDeviceUnmapsAKRBDMapping(t *testing.T) {
	e := newNodeEnv(t)
	sys := t.TempDir()
	bus := filepath.Join(sys, "bus", "rbd")
	dev0 := filepath.Join(bus, "devices", "0")
	if err := os.MkdirAll(dev0, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"pool": testPool, "name": e.ref.Name, "current_snap": "-", "pool_ns": ""} {
		if err := os.WriteFile(filepath.Join(dev0, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	remove := filepath.Join(bus, "remove")
	if err := os.WriteFile(remove, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	krbd, err := mapper.New(mapper.KRBD, mapper.Config{SysfsRoot: sys, DevRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	opts := e.opts
	opts.Node.Mapper, opts.Node.Mappers, opts.Node.Mounter = mapper.KRBD, map[string]mapper.Mapper{mapper.KRBD: krbd}, e.mnt
	dDriver, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	d := services(dDriver)
	st := &stageState{VolumeID: e.volID, Mapper: mapper.KRBD, StagingPath: e.staging, Block: true, Image: stageImage{ClusterID: clusterID, Pool: testPool, Name: e.ref.Name}}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	_, err = d.NodeUnstageVolume(context.Background(), unstageReq(e))
	written, _ := os.ReadFile(remove)
	if err == nil && strings.TrimSpace(string(written)) != "0" {
		t.Fatalf("unstage succeeded and dropped the state, but /dev/rbd0 of %s was never removed (remove got %q)", e.spec(), written)
	}
	if err != nil && e.state(t) == nil {
		t.Fatalf("unstage failed (%v) and dropped the state that names the mapping", err)
	}
	if n := d.locks.Held(); n != 0 {
		t.Fatalf("%d locks held", n)
	}
}

// Mount flags a user asked for are not a symptom: a writable volume staged
// with the "ro" mount option is not "remounted read-only after I/O errors".
func TestNodeGetVolumeStatsDoesNotReportARequestedReadOnlyMountAsAbnormal(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, fsCap("ext4", modeSNW, "ro"))
	e.publish(t, e.target("a"), fsCap("ext4", modeSNW, "ro"))
	resp, err := e.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: e.volID, VolumePath: e.target("a"), StagingTargetPath: e.staging})
	if err != nil {
		t.Fatal(err)
	}
	if abnormal, msg := legacyCondition(t, resp); abnormal {
		t.Fatalf("volume mounted ro on request reported abnormal: %q", msg)
	}
}

// A stage that died between Map and recording the device leaves a state
// without a device. If the retry's Map is then refused, that state is still
// the only record of the earlier mapping: it must stay for NodeUnstageVolume.
func TestNodeStageVolumeRefusedRetryKeepsTheStateOfAnEarlierMap(t *testing.T) {
	e := newNodeEnv(t)
	if _, err := e.m.Map(context.Background(), mapper.Image{Pool: testPool, Name: e.ref.Name}, mapper.MapOptions{}); err != nil {
		t.Fatal(err)
	}
	st := &stageState{VolumeID: e.volID, Mapper: "fake", StagingPath: e.staging, FsType: "ext4", Image: stageImage{ClusterID: clusterID, Pool: testPool, Name: e.ref.Name}}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	e.m.mapErr = fmt.Errorf("%w: mapped differently", mapper.ErrMappingConflict)
	_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
	wantCode(t, err, codes.FailedPrecondition, "mapped differently")
	if e.state(t) == nil {
		t.Fatal("the refused retry dropped the state that names the earlier mapping")
	}
	e.m.mapErr = nil
	if _, err := e.d.NodeUnstageVolume(context.Background(), unstageReq(e)); err != nil {
		t.Fatal(err)
	}
	if e.m.isMapped(e.spec()) {
		t.Fatal("the earlier mapping was left behind")
	}
}

func TestExplainNotGrownOnlyAddsTheRBDNBDBugToADeviceThatDidNotGrow(t *testing.T) {
	notGrown := status.Error(codes.Unavailable, "device /dev/nbd0 is still 1 bytes")
	unreadable := status.Error(codes.Internal, "size of /dev/nbd0: no such device")
	for _, tc := range []struct {
		name     string
		mapper   string
		err      error
		wantCode codes.Code
		wantBug  bool
	}{
		{"rbd-nbd device not grown names the bug", mapper.RBDNBD, notGrown, codes.Unavailable, true},
		{"rbd-nbd unreadable size stays Internal", mapper.RBDNBD, unreadable, codes.Internal, false},
		{"krbd device not grown is left as it is", mapper.KRBD, notGrown, codes.Unavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := explainNotGrown(tc.mapper, tc.err)
			if status.Code(err) != tc.wantCode {
				t.Errorf("code %v, want %v (%v)", status.Code(err), tc.wantCode, err)
			}
			if got := strings.Contains(err.Error(), "64139"); got != tc.wantBug {
				t.Errorf("names the rbd-nbd bug: %v, want %v (%v)", got, tc.wantBug, err)
			}
		})
	}
}

// A plugin killed while its mapper ran leaves the state without a device
// and the image mapped here, that mapping's client a watcher of the image.
// The retried stage must adopt that mapping, not take it for another
// node's; a second client besides it still makes the stage back out.
func TestNodeStageVolumeRetriedAfterDyingDuringTheMap(t *testing.T) {
	orphan := ceph.Watcher{Addr: "10.0.0.9:0/9", Client: 9}
	tests := []struct {
		name     string
		watchers []ceph.Watcher
		allowed  bool
	}{
		{"only the dead stage's mapping: adopted and staged", []ceph.Watcher{orphan}, true},
		{"another node's client as well: backs out", []ceph.Watcher{orphan, {Addr: "10.1.2.3:0/42", Client: 4711}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			st := &stageState{VolumeID: e.volID, Mapper: "fake", StagingPath: e.staging, FsType: "ext4", Image: stageImage{ClusterID: clusterID, Pool: testPool, Name: e.ref.Name}}
			if err := st.save(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.m.Map(context.Background(), mapper.Image{Pool: testPool, Name: e.ref.Name}, mapper.MapOptions{}); err != nil {
				t.Fatal(err)
			}
			e.ceph.SetWatchers(e.ref, tc.watchers)
			_, err := e.d.NodeStageVolume(context.Background(), e.stageReq(fsCap("ext4", modeSNW)))
			if !tc.allowed {
				wantCode(t, err, codes.FailedPrecondition, "another node mapped it")
				if n := e.m.mappedCount(); n != 0 {
					t.Errorf("%d images still mapped", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("stage: %v", err)
			}
			if got := e.state(t); got == nil || got.Device == nil || !got.Mounted {
				t.Fatalf("state after the retried stage: %+v", got)
			}
			if n := e.m.mappedCount(); n != 1 {
				t.Errorf("%d images mapped, want the adopted one", n)
			}
		})
	}
}
