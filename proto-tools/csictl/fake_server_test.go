package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// recorder keeps the last request received for each RPC.
type recorder struct {
	mu   sync.Mutex
	last map[string]proto.Message
}

func (r *recorder) record(method string, req proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[method] = proto.Clone(req)
}

func (r *recorder) take(method string) proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.last[method]
	delete(r.last, method)
	return m
}

type fakeIdentity struct {
	csi.UnimplementedIdentityServer
	rec *recorder
}

func (f *fakeIdentity) GetPluginInfo(_ context.Context, req *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	f.rec.record("GetPluginInfo", req)
	return &csi.GetPluginInfoResponse{Name: "rbd.csi.test", VendorVersion: "v0.1.0", Manifest: map[string]string{"commit": "abc"}}, nil
}

func (f *fakeIdentity) GetPluginCapabilities(_ context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	f.rec.record("GetPluginCapabilities", req)
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

func (f *fakeIdentity) Probe(_ context.Context, req *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	f.rec.record("Probe", req)
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

type fakeController struct {
	csi.UnimplementedControllerServer
	rec *recorder
}

// testVolumeContext is what the fake CreateVolume returns.
var testVolumeContext = map[string]string{"pool": "rbd", "clusterID": "c1", "imageName": "csi-vol-1"}

func (f *fakeController) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	f.rec.record("CreateVolume", req)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      "vol-" + req.GetName(),
		CapacityBytes: req.GetCapacityRange().GetRequiredBytes(),
		VolumeContext: testVolumeContext,
		ContentSource: req.GetVolumeContentSource(),
	}}, nil
}

// DeleteVolume fails for "echo-secrets" with a message that (wrongly)
// includes the secrets, to check that csictl masks them.
func (f *fakeController) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	f.rec.record("DeleteVolume", req)
	if req.GetVolumeId() == "echo-secrets" {
		return nil, status.Errorf(codes.NotFound, "volume not found (credentials %v)", req.GetSecrets())
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (f *fakeController) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	f.rec.record("ControllerExpandVolume", req)
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: req.GetCapacityRange().GetRequiredBytes(), NodeExpansionRequired: true}, nil
}

func (f *fakeController) ListVolumes(_ context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	f.rec.record("ListVolumes", req)
	return &csi.ListVolumesResponse{NextToken: "page-2", Entries: []*csi.ListVolumesResponse_Entry{
		{Volume: &csi.Volume{VolumeId: "vol-a", CapacityBytes: 1 << 30}},
	}}, nil
}

func (f *fakeController) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	f.rec.record("GetCapacity", req)
	return &csi.GetCapacityResponse{AvailableCapacity: 5 << 30}, nil
}

func (f *fakeController) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	f.rec.record("ValidateVolumeCapabilities", req)
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities(),
	}}, nil
}

func (f *fakeController) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	f.rec.record("CreateSnapshot", req)
	return &csi.CreateSnapshotResponse{Snapshot: testSnapshot(req.GetSourceVolumeId())}, nil
}

func testSnapshot(source string) *csi.Snapshot {
	return &csi.Snapshot{SnapshotId: "snap-1", SourceVolumeId: source, SizeBytes: 1 << 30, ReadyToUse: true,
		CreationTime: &timestamppb.Timestamp{Seconds: 1700000000}}
}

func (f *fakeController) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	f.rec.record("DeleteSnapshot", req)
	return &csi.DeleteSnapshotResponse{}, nil
}

func (f *fakeController) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	f.rec.record("ListSnapshots", req)
	return &csi.ListSnapshotsResponse{Entries: []*csi.ListSnapshotsResponse_Entry{{Snapshot: testSnapshot("vol-a")}}}, nil
}

func (f *fakeController) ControllerGetCapabilities(_ context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	f.rec.record("ControllerGetCapabilities", req)
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}}},
	}}, nil
}

type fakeNode struct {
	csi.UnimplementedNodeServer
	rec *recorder
}

func (f *fakeNode) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	f.rec.record("NodeStageVolume", req)
	return &csi.NodeStageVolumeResponse{}, nil
}

func (f *fakeNode) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	f.rec.record("NodeUnstageVolume", req)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (f *fakeNode) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	f.rec.record("NodePublishVolume", req)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (f *fakeNode) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	f.rec.record("NodeUnpublishVolume", req)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (f *fakeNode) NodeExpandVolume(_ context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	f.rec.record("NodeExpandVolume", req)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: 3 << 30}, nil
}

func (f *fakeNode) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	f.rec.record("NodeGetVolumeStats", req)
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: 1000, Used: 400, Available: 600},
	}}, nil
}

func (f *fakeNode) NodeGetInfo(_ context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	f.rec.record("NodeGetInfo", req)
	return &csi.NodeGetInfoResponse{NodeId: "node-1", MaxVolumesPerNode: 16}, nil
}

func (f *fakeNode) NodeGetCapabilities(_ context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	f.rec.record("NodeGetCapabilities", req)
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}},
	}}, nil
}

// startFakeServer serves the fakes on a unix socket in a temp dir and
// returns the socket path.
func startFakeServer(t *testing.T) (string, *recorder) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	rec := &recorder{last: map[string]proto.Message{}}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, &fakeIdentity{rec: rec})
	csi.RegisterControllerServer(srv, &fakeController{rec: rec})
	csi.RegisterNodeServer(srv, &fakeNode{rec: rec})
	go func() { _ = srv.Serve(lis) }() // returns when the server stops
	t.Cleanup(srv.Stop)
	return sock, rec
}

const (
	testUserID  = "csi-admin-user"
	testUserKey = "AQBmEwZo4xPvDhAAr8/9+secret=="
)

var testSecrets = map[string]string{"userID": testUserID, "userKey": testUserKey}

// runCLI runs csictl in-process with no environment beyond env.
func runCLI(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

// assertNoSecrets fails if any secret value shows up in s.
func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	for _, v := range testSecrets {
		if strings.Contains(s, v) {
			t.Fatalf("output leaks secret %q:\n%s", v, s)
		}
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fsType string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

const (
	snw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	snmw = csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
	mnro = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
)

// rpcCases maps command lines to the request the fake must receive and to
// text the output must contain.
var rpcCases = []struct {
	name   string
	args   []string
	method string
	want   proto.Message
	out    []string
}{
	{name: "info", args: []string{"info"}, method: "GetPluginCapabilities", want: &csi.GetPluginCapabilitiesRequest{},
		out: []string{"name: rbd.csi.test", "vendor_version: v0.1.0", "commit=abc", "SERVICE CONTROLLER_SERVICE", "VOLUME_EXPANSION ONLINE"}},
	{name: "probe", args: []string{"probe"}, method: "Probe", want: &csi.ProbeRequest{}, out: []string{"ready: true"}},
	{name: "create mount", method: "CreateVolume",
		args: []string{"create", "pvc-1", "--size", "1Gi", "--limit", "--fs-type", "ext4", "--mount-flag", "discard",
			"--access-mode", "single-node-multi-writer", "--param", "pool=rbd", "--param", "clusterID=c1", "--source-snapshot", "snap-0"},
		want: &csi.CreateVolumeRequest{
			Name:               "pvc-1",
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 1 << 30},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(snmw, "ext4", "discard")},
			Parameters:         map[string]string{"pool": "rbd", "clusterID": "c1"},
			Secrets:            testSecrets,
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap-0"}}},
		},
		out: []string{"volume_id: vol-pvc-1", "capacity_bytes: 1073741824", "pool=rbd", "clusterID=c1", "content_source: snapshot snap-0"}},
	{name: "create block clone", method: "CreateVolume",
		args: []string{"create", "--block", "--size=1073741824", "pvc-2", "--limit=2Gi", "--source-volume", "vol-0"},
		want: &csi.CreateVolumeRequest{
			Name:               "pvc-2",
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 2 << 30},
			VolumeCapabilities: []*csi.VolumeCapability{blockCap(snw)},
			Secrets:            testSecrets,
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "vol-0"}}},
		},
		out: []string{"volume_id: vol-pvc-2"}},
	{name: "delete", args: []string{"delete", "vol-1"}, method: "DeleteVolume",
		want: &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: testSecrets}, out: []string{"deleted volume vol-1"}},
	{name: "expand block", args: []string{"expand", "vol-1", "--size", "2Gi", "--block"}, method: "ControllerExpandVolume",
		want: &csi.ControllerExpandVolumeRequest{VolumeId: "vol-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30},
			VolumeCapability: blockCap(snw), Secrets: testSecrets},
		out: []string{"capacity_bytes: 2147483648", "node_expansion_required: true"}},
	{name: "expand no capability", args: []string{"expand", "vol-1", "--size", "2048Mi"}, method: "ControllerExpandVolume",
		want: &csi.ControllerExpandVolumeRequest{VolumeId: "vol-1", CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}, Secrets: testSecrets}},
	{name: "list", args: []string{"list", "--max", "10", "--token", "t1"}, method: "ListVolumes",
		want: &csi.ListVolumesRequest{MaxEntries: 10, StartingToken: "t1"}, out: []string{"VOLUME_ID", "vol-a", "1073741824", "next_token: page-2"}},
	{name: "capacity", args: []string{"capacity", "--param", "pool=rbd"}, method: "GetCapacity",
		want: &csi.GetCapacityRequest{Parameters: map[string]string{"pool": "rbd"}}, out: []string{"available_capacity: 5368709120"}},
	{name: "validate", method: "ValidateVolumeCapabilities",
		args: []string{"validate", "vol-1", "--access-mode", "MULTI_NODE_READER_ONLY", "--context", "pool=rbd", "--param", "p=1"},
		want: &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "vol-1", VolumeContext: map[string]string{"pool": "rbd"},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap(mnro, "")}, Parameters: map[string]string{"p": "1"}, Secrets: testSecrets},
		out: []string{"confirmed: true"}},
	{name: "snapshot", args: []string{"snapshot", "snap-1", "--source", "vol-1", "--param", "x=y"}, method: "CreateSnapshot",
		want: &csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: "vol-1", Parameters: map[string]string{"x": "y"}, Secrets: testSecrets},
		out:  []string{"snapshot_id: snap-1", "source_volume_id: vol-1", "ready_to_use: true", "creation_time: 2023-11-14T22:13:20Z"}},
	{name: "delete-snapshot", args: []string{"delete-snapshot", "snap-1"}, method: "DeleteSnapshot",
		want: &csi.DeleteSnapshotRequest{SnapshotId: "snap-1", Secrets: testSecrets}, out: []string{"deleted snapshot snap-1"}},
	{name: "list-snapshots", args: []string{"list-snapshots", "--source", "vol-a", "--id", "snap-1", "--max", "5"}, method: "ListSnapshots",
		want: &csi.ListSnapshotsRequest{SourceVolumeId: "vol-a", SnapshotId: "snap-1", MaxEntries: 5, Secrets: testSecrets},
		out:  []string{"SNAPSHOT_ID", "snap-1", "vol-a"}},
	{name: "controller-caps", args: []string{"controller-caps"}, method: "ControllerGetCapabilities",
		want: &csi.ControllerGetCapabilitiesRequest{}, out: []string{"CREATE_DELETE_VOLUME"}},
	{name: "stage", method: "NodeStageVolume",
		args: []string{"stage", "vol-1", "--staging-path", "/stage", "--fs-type", "xfs", "--mount-flag", "noatime",
			"--mount-flag", "nodiscard", "--context", "pool=rbd", "--publish-context", "dev=/dev/rbd0"},
		want: &csi.NodeStageVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/stage",
			VolumeCapability: mountCap(snw, "xfs", "noatime", "nodiscard"), VolumeContext: map[string]string{"pool": "rbd"},
			PublishContext: map[string]string{"dev": "/dev/rbd0"}, Secrets: testSecrets},
		out: []string{"staged volume vol-1 at /stage"}},
	{name: "publish", method: "NodePublishVolume",
		args: []string{"publish", "vol-1", "--staging-path", "/stage", "--target-path", "/target", "--readonly", "--block", "--context", "pool=rbd"},
		want: &csi.NodePublishVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/stage", TargetPath: "/target", Readonly: true,
			VolumeCapability: blockCap(snw), VolumeContext: map[string]string{"pool": "rbd"}, Secrets: testSecrets},
		out: []string{"published volume vol-1 at /target"}},
	{name: "unpublish", args: []string{"unpublish", "vol-1", "--target-path", "/target"}, method: "NodeUnpublishVolume",
		want: &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-1", TargetPath: "/target"}},
	{name: "unstage", args: []string{"unstage", "vol-1", "--staging-path", "/stage"}, method: "NodeUnstageVolume",
		want: &csi.NodeUnstageVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/stage"}},
	{name: "node-expand", method: "NodeExpandVolume",
		args: []string{"node-expand", "vol-1", "--path", "/target", "--staging-path", "/stage", "--size", "3Gi", "--fs-type", "ext4"},
		want: &csi.NodeExpandVolumeRequest{VolumeId: "vol-1", VolumePath: "/target", StagingTargetPath: "/stage",
			CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 30}, VolumeCapability: mountCap(snw, "ext4"), Secrets: testSecrets},
		out: []string{"capacity_bytes: 3221225472"}},
	{name: "node-expand minimal", args: []string{"node-expand", "vol-1", "--path", "/target"}, method: "NodeExpandVolume",
		want: &csi.NodeExpandVolumeRequest{VolumeId: "vol-1", VolumePath: "/target", Secrets: testSecrets}},
	{name: "stats", args: []string{"stats", "vol-1", "--path", "/target", "--staging-path", "/stage"}, method: "NodeGetVolumeStats",
		want: &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-1", VolumePath: "/target", StagingTargetPath: "/stage"},
		out:  []string{"BYTES", "1000", "400", "600"}},
	{name: "node-info", args: []string{"node-info"}, method: "NodeGetInfo", want: &csi.NodeGetInfoRequest{},
		out: []string{"node_id: node-1", "max_volumes_per_node: 16"}},
	{name: "node-caps", args: []string{"node-caps"}, method: "NodeGetCapabilities", want: &csi.NodeGetCapabilitiesRequest{},
		out: []string{"STAGE_UNSTAGE_VOLUME"}},
}

// TestCommandsAgainstFakeServer runs every command in text and JSON mode
// and checks the request the plugin received and the printed response.
func TestCommandsAgainstFakeServer(t *testing.T) {
	sock, rec := startFakeServer(t)
	secretsFile := filepath.Join(t.TempDir(), "secrets")
	data := "# test credentials\nuserID=" + testUserID + "\nuserKey=" + testUserKey + "\n"
	if err := os.WriteFile(secretsFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	global := []string{"--endpoint", "unix://" + sock, "--timeout", "10s", "--secrets-file", secretsFile}
	for _, output := range []string{"text", "json"} {
		for _, tc := range rpcCases {
			t.Run(output+"/"+tc.name, func(t *testing.T) {
				code, stdout, stderr := runCLI(nil, append(append(global, "--output", output), tc.args...)...)
				if code != exitOK {
					t.Fatalf("exit %d, stderr:\n%s", code, stderr)
				}
				assertNoSecrets(t, stdout+stderr)
				checkRequest(t, rec.take(tc.method), tc.want)
				checkOutput(t, output, stdout, tc.out)
			})
		}
	}
}

func checkRequest(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("request mismatch\n got: %s\nwant: %s", prototext.Format(got), prototext.Format(want))
	}
}

func checkOutput(t *testing.T, format, stdout string, want []string) {
	t.Helper()
	if format == "json" {
		if !json.Valid([]byte(stdout)) {
			t.Fatalf("invalid JSON output:\n%s", stdout)
		}
		return
	}
	for _, w := range want {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, stdout)
		}
	}
}

// TestCreateJSONFeedsStage checks the demo flow: create --output json,
// then stage with that file as --context-file, secrets from $CSI_SECRETS.
func TestCreateJSONFeedsStage(t *testing.T) {
	sock, rec := startFakeServer(t)
	secretsJSON, err := json.Marshal(testSecrets)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CSI_ENDPOINT": sock, "CSI_SECRETS": string(secretsJSON)}
	code, stdout, stderr := runCLI(env, "--output", "json", "create", "demo", "--size", "1Gi")
	if code != exitOK {
		t.Fatalf("create: exit %d: %s", code, stderr)
	}
	assertNoSecrets(t, stdout+stderr)
	var created struct {
		VolumeID      string            `json:"volume_id"`
		CapacityBytes string            `json:"capacity_bytes"`
		VolumeContext map[string]string `json:"volume_context"`
	}
	if err := json.Unmarshal([]byte(stdout), &created); err != nil {
		t.Fatalf("create output is not the expected object: %v\n%s", err, stdout)
	}
	if created.VolumeID != "vol-demo" || created.CapacityBytes != "1073741824" || len(created.VolumeContext) != len(testVolumeContext) {
		t.Fatalf("unexpected create output: %+v", created)
	}
	if got := rec.take("CreateVolume").(*csi.CreateVolumeRequest).GetSecrets(); !equalMaps(got, testSecrets) {
		t.Fatalf("CreateVolume secrets from CSI_SECRETS not sent: got %d keys", len(got))
	}
	ctxFile := filepath.Join(t.TempDir(), "vol.json")
	if err := os.WriteFile(ctxFile, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(env, "stage", created.VolumeID, "--staging-path", "/stage",
		"--context-file", ctxFile, "--context", "pool=override", "--context", "extra=1")
	if code != exitOK {
		t.Fatalf("stage: exit %d: %s", code, stderr)
	}
	assertNoSecrets(t, stdout+stderr)
	want := map[string]string{"clusterID": "c1", "imageName": "csi-vol-1", "pool": "override", "extra": "1"}
	req := rec.take("NodeStageVolume").(*csi.NodeStageVolumeRequest)
	if !equalMaps(req.GetVolumeContext(), want) || !equalMaps(req.GetSecrets(), testSecrets) {
		t.Fatalf("stage request: context %v, %d secrets", req.GetVolumeContext(), len(req.GetSecrets()))
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestRPCErrorMasksSecrets checks that a failing RPC prints its gRPC code
// and message to stderr, exits 1, and masks secrets the plugin echoed.
func TestRPCErrorMasksSecrets(t *testing.T) {
	sock, _ := startFakeServer(t)
	secretsFile := filepath.Join(t.TempDir(), "secrets.json")
	if err := os.WriteFile(secretsFile, []byte(`{"userID":"`+testUserID+`","userKey":"`+testUserKey+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(nil, "delete", "echo-secrets", "--endpoint", sock, "--secrets-file", secretsFile)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	assertNoSecrets(t, stdout+stderr)
	for _, w := range []string{"DeleteVolume failed", "code = NotFound", "volume not found", "***"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q: %s", w, stderr)
		}
	}
}

func TestUnreachableEndpoint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	code, _, stderr := runCLI(nil, "--endpoint", "unix:"+sock, "probe")
	if code != exitFailure || !strings.Contains(stderr, "code = Unavailable") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	sock, rec := startFakeServer(t)
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"bogus"}, want: `unknown command "bogus"`},
		{args: []string{"--nope", "probe"}, want: "flag provided but not defined"},
		{args: []string{"probe", "extra"}, want: `unexpected argument "extra"`},
		{args: []string{"delete"}, want: "expected 1 argument(s) VOLUME_ID, got 0"},
		{args: []string{"delete", ""}, want: "VOLUME_ID must not be empty"},
		{args: []string{"create", "v"}, want: "--size is required"},
		{args: []string{"create", "v", "--size", "1G"}, want: `unit "G" is not supported`},
		{args: []string{"create", "v", "--size", "2Gi", "--limit=1Gi"}, want: "smaller than --size"},
		{args: []string{"create", "v", "--size", "1Gi", "--source-volume", "a", "--source-snapshot", "b"}, want: "mutually exclusive"},
		{args: []string{"create", "v", "--size", "1Gi", "--block", "--fs-type", "ext4"}, want: "--block cannot be combined"},
		{args: []string{"create", "v", "--size", "1Gi", "--access-mode", "rwo"}, want: "invalid access mode"},
		{args: []string{"create", "v", "--size", "1Gi", "--param", "pool"}, want: "expected key=value"},
		{args: []string{"list", "--max", "-1"}, want: "invalid max entries"},
		{args: []string{"snapshot", "s"}, want: "--source is required"},
		{args: []string{"stage", "v"}, want: "--staging-path is required"},
		{args: []string{"publish", "v", "--staging-path", "/s"}, want: "--target-path is required"},
		{args: []string{"stats", "v"}, want: "--path is required"},
		{args: []string{"--output", "yaml", "probe"}, want: "must be text or json"},
		{args: []string{"probe", "--timeout", "0s"}, want: "must be positive"},
		{args: []string{"probe", "--endpoint", "tcp://localhost:1"}, want: "only unix sockets"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(map[string]string{"CSI_ENDPOINT": sock}, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "--help") {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
	if len(rec.last) != 0 {
		t.Fatalf("usage errors must not reach the plugin, got %v", rec.last)
	}
}

func TestSecretsFileErrorsExitOne(t *testing.T) {
	sock, rec := startFakeServer(t)
	bad := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(bad, []byte("userKey: "+testUserKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(nil, "--endpoint", sock, "--secrets-file", bad, "delete", "vol-1")
	if code != exitFailure || !strings.Contains(stderr, "line 1") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	assertNoSecrets(t, stdout+stderr)
	if rec.take("DeleteVolume") != nil {
		t.Fatal("RPC sent despite unusable secrets")
	}
}

// TestHelpDocumentsEveryFlag checks "COMMAND --help" and "help COMMAND".
func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
			c.bind(fs)
			newGlobals().register(fs)
			for _, args := range [][]string{{c.name, "--help"}, {"help", c.name}, {c.name, "-h"}} {
				code, stdout, _ := runCLI(nil, args...)
				if code != exitOK || !strings.Contains(stdout, "Usage: csictl [global flags] "+c.name) {
					t.Fatalf("%v: exit %d, output:\n%s", args, code, stdout)
				}
				fs.VisitAll(func(f *flag.Flag) {
					if !strings.Contains(stdout, "  -"+f.Name+" ") && !strings.Contains(stdout, "  -"+f.Name+"\n") {
						t.Errorf("%v: help does not document -%s", args, f.Name)
					}
				})
			}
		})
	}
	code, stdout, _ := runCLI(nil, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(stdout, "  "+c.name+" ") {
			t.Errorf("top-level help does not list %s", c.name)
		}
	}
}
