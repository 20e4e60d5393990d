package driver

import (
	"context"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/rbd-csi/rbd-csi/internal/attach"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
)

// attachEnv is a controller with one created volume.
type attachEnv struct {
	d    *testDriver
	fake *cephfake.Backend
	id   string
	ref  ceph.ImageRef
}

func newAttachEnv(t *testing.T) *attachEnv {
	t.Helper()
	d, fake := newTestDriver(t)
	resp, err := d.CreateVolume(context.Background(), createReq("pvc-attach", 1<<30, nil))
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := d.planCreate(createReq("pvc-attach", 1<<30, nil))
	return &attachEnv{d: d, fake: fake, id: resp.Volume.VolumeId, ref: plan.ref}
}

func (e *attachEnv) publish(node string, c *csi.VolumeCapability) (*csi.ControllerPublishVolumeResponse, error) {
	return e.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: e.id, NodeId: node, VolumeCapability: c, Secrets: secrets()})
}

func (e *attachEnv) unpublish(node string) error {
	_, err := e.d.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: e.id, NodeId: node, Secrets: secrets()})
	return err
}

func (e *attachEnv) mustPublish(t *testing.T, node string, c *csi.VolumeCapability) map[string]string {
	t.Helper()
	resp, err := e.publish(node, c)
	if err != nil {
		t.Fatalf("publish to %s: %v", node, err)
	}
	return resp.PublishContext
}

func (e *attachEnv) holders(t *testing.T) []string {
	t.Helper()
	data := e.fake.AttachRecord(e.ref)
	if data == nil {
		return nil
	}
	r, err := attach.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return r.Nodes()
}

func TestControllerPublishRejectsBadRequests(t *testing.T) {
	e := newAttachEnv(t)
	tests := []struct {
		name string
		req  *csi.ControllerPublishVolumeRequest
		code codes.Code
	}{
		{"no volume ID", &csi.ControllerPublishVolumeRequest{NodeId: "n", VolumeCapability: mountCap()}, codes.InvalidArgument},
		{"no node ID", &csi.ControllerPublishVolumeRequest{VolumeId: e.id, VolumeCapability: mountCap()}, codes.InvalidArgument},
		{"no capability", &csi.ControllerPublishVolumeRequest{VolumeId: e.id, NodeId: "n"}, codes.InvalidArgument},
		{"multi-writer filesystem", &csi.ControllerPublishVolumeRequest{VolumeId: e.id, NodeId: "n", VolumeCapability: fsCap("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}, codes.InvalidArgument},
		{"node ID no node plugin reports", &csi.ControllerPublishVolumeRequest{VolumeId: e.id, NodeId: "fake_node", VolumeCapability: mountCap()}, codes.NotFound},
		{"volume ID this driver never made", &csi.ControllerPublishVolumeRequest{VolumeId: "fake-vol", NodeId: "n", VolumeCapability: mountCap()}, codes.NotFound},
		{"volume whose image is gone", &csi.ControllerPublishVolumeRequest{VolumeId: "1/c1/1/csi-vol-0123456789abcdef0123456789abcdef", NodeId: "n", VolumeCapability: mountCap(), Secrets: secrets()}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.d.ControllerPublishVolume(context.Background(), tt.req)
			wantCode(t, err, tt.code)
		})
	}
	if h := e.holders(t); len(h) != 0 {
		t.Fatalf("refused requests left claims %v", h)
	}
}

func TestControllerPublishOfAStaticVolumeKeepsNoRecord(t *testing.T) {
	e := newAttachEnv(t)
	req := &csi.ControllerPublishVolumeRequest{VolumeId: "ceph-image", NodeId: "node-a", VolumeCapability: mountCap(),
		VolumeContext: map[string]string{"clusterID": clusterID, "pool": testPool, "imageName": e.ref.Name, "staticVolume": "true"}}
	resp, err := e.d.ControllerPublishVolume(context.Background(), req)
	if err != nil || len(resp.PublishContext) != 0 {
		t.Fatalf("publish of a static volume = %v, %v; want success without publish_context", resp, err)
	}
	if h := e.holders(t); len(h) != 0 {
		t.Fatalf("a record nobody could release was written: %v", h)
	}
}

func TestControllerPublishSingleNodeVolume(t *testing.T) {
	e := newAttachEnv(t)
	pc := e.mustPublish(t, "node-a", mountCap())
	if pc[attach.ContextNode] != "node-a" || pc[attach.ContextGeneration] == "" {
		t.Fatalf("publish_context %v lacks the node and generation", pc)
	}
	if again := e.mustPublish(t, "node-a", mountCap()); again[attach.ContextGeneration] != pc[attach.ContextGeneration] {
		t.Errorf("repeated publish changed the generation %v -> %v", pc, again)
	}
	_, err := e.publish("node-b", mountCap())
	wantCode(t, err, codes.FailedPrecondition, "node-a", "out-of-service")
	_, err = e.publish("node-a", fsCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY))
	wantCode(t, err, codes.AlreadyExists)
	if h := e.holders(t); !slices.Equal(h, []string{"node-a"}) {
		t.Fatalf("holders %v, want [node-a]", h)
	}
}

// The driver creates no MULTI_NODE_READER_ONLY volumes (checkCapability),
// so block multi-writers are the one shared mode publish sees; package
// attach covers shared readers.
func TestControllerPublishSharesBlockMultiWriterVolumes(t *testing.T) {
	e := newAttachEnv(t)
	rwx := blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	e.mustPublish(t, "node-a", rwx)
	e.mustPublish(t, "node-b", rwx)
	_, err := e.publish("node-c", blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.FailedPrecondition)
	_, err = e.publish("node-c", fsCap("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY))
	wantCode(t, err, codes.InvalidArgument, "MULTI_NODE_READER_ONLY")
	if h := e.holders(t); !slices.Equal(h, []string{"node-a", "node-b"}) {
		t.Fatalf("holders %v", h)
	}
}

func TestControllerUnpublishReleasesOnlyThatNode(t *testing.T) {
	e := newAttachEnv(t)
	rwx := blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	e.mustPublish(t, "node-a", rwx)
	e.mustPublish(t, "node-b", rwx)
	for i := range 2 {
		if err := e.unpublish("node-a"); err != nil {
			t.Fatalf("unpublish %d: %v", i, err)
		}
	}
	if h := e.holders(t); !slices.Equal(h, []string{"node-b"}) {
		t.Fatalf("holders %v, want [node-b]", h)
	}
	if err := e.unpublish(""); err != nil {
		t.Fatal(err)
	}
	if h := e.holders(t); len(h) != 0 {
		t.Fatalf("unpublish without node left %v", h)
	}
}

func TestControllerUnpublishOfWhatIsGoneSucceeds(t *testing.T) {
	e := newAttachEnv(t)
	for _, id := range []string{"fake-vol", "1/c1/1/csi-vol-0123456789abcdef0123456789abcdef", "1/c1/99/csi-vol-0123456789abcdef0123456789abcdef"} {
		if _, err := e.d.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: "node-a", Secrets: secrets()}); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func TestControllerUnpublishFencesOnlyALostWriter(t *testing.T) {
	lost := []ceph.Watcher{{Addr: "10.0.0.7:0/1234", Client: 99}}
	tests := []struct {
		name     string
		cap      *csi.VolumeCapability
		readonly bool // the publish request's flag
		watchers []ceph.Watcher
		fenced   []string
	}{
		{"writer that unstaged is not fenced", mountCap(), false, nil, []string{}},
		{"writer that still has the image open is fenced", mountCap(), false, lost, []string{"10.0.0.7:0/1234"}},
		// The node stages a writer mode read-write whatever the publish
		// flag says (only the bind mount is read-only), so it can write.
		{"writer mode published readonly is fenced too", mountCap(), true, lost, []string{"10.0.0.7:0/1234"}},
		{"reader is never fenced", fsCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), false, lost, []string{}},
		{"shared block writers are not told apart, so not fenced", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), false, lost, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAttachEnv(t)
			if _, err := e.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{
				VolumeId: e.id, NodeId: "node-a", VolumeCapability: tt.cap, Readonly: tt.readonly, Secrets: secrets(),
			}); err != nil {
				t.Fatal(err)
			}
			e.fake.SetWatchers(e.ref, tt.watchers)
			if err := e.unpublish("node-a"); err != nil {
				t.Fatal(err)
			}
			if got := e.fake.Blocklisted(); !slices.Equal(got, tt.fenced) {
				t.Fatalf("blocklisted %v, want %v", got, tt.fenced)
			}
			if h := e.holders(t); len(h) != 0 {
				t.Fatalf("claim kept: %v", h)
			}
		})
	}
}

func TestControllerUnpublishKeepsTheClaimWhenFencingFails(t *testing.T) {
	e := newAttachEnv(t)
	e.mustPublish(t, "node-a", mountCap())
	e.fake.SetWatchers(e.ref, []ceph.Watcher{{Addr: "10.0.0.7:0/1234", Client: 99}})
	e.fake.Fail = func(op string, _ ceph.ImageRef) error {
		if op == "blocklist" {
			return ceph.ErrUnavailable
		}
		return nil
	}
	wantCode(t, e.unpublish("node-a"), codes.Unavailable, "10.0.0.7")
	if h := e.holders(t); !slices.Equal(h, []string{"node-a"}) {
		t.Fatalf("claim released although its node was not fenced: %v", h)
	}
	_, err := e.publish("node-b", mountCap())
	wantCode(t, err, codes.FailedPrecondition, "node-a")
}

func TestDeleteVolumeOfAnAttachedVolumeIsFailedPrecondition(t *testing.T) {
	e := newAttachEnv(t)
	e.mustPublish(t, "node-a", mountCap())
	del := &csi.DeleteVolumeRequest{VolumeId: e.id, Secrets: secrets()}
	_, err := e.d.DeleteVolume(context.Background(), del)
	wantCode(t, err, codes.FailedPrecondition, "node-a")
	if n := len(e.fake.Images(testPool)); n != 1 {
		t.Fatal("attached volume was deleted")
	}
	if err := e.unpublish("node-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.DeleteVolume(context.Background(), del); err != nil {
		t.Fatal(err)
	}
	if e.fake.AttachRecord(e.ref) != nil {
		t.Fatal("DeleteVolume left the attachment record")
	}
}

func TestDeleteVolumeRetryDropsTheRecordOfAnImageAlreadyGone(t *testing.T) {
	e := newAttachEnv(t)
	e.mustPublish(t, "node-a", mountCap())
	if err := e.unpublish("node-a"); err != nil {
		t.Fatal(err)
	}
	// As after a crash between trashing the image and dropping its record.
	if _, err := e.fake.TrashImage(context.Background(), ceph.Credentials{User: "admin", Key: testKey}, e.ref); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: e.id, Secrets: secrets()}); err != nil {
		t.Fatal(err)
	}
	if e.fake.AttachRecord(e.ref) != nil {
		t.Fatal("the retry left the attachment record")
	}
}

func TestControllerPublishWithoutSecretsUsesTheSecretsDir(t *testing.T) {
	e := newAttachEnv(t)
	req := &csi.ControllerPublishVolumeRequest{VolumeId: e.id, NodeId: "node-a", VolumeCapability: mountCap()}
	_, err := e.d.ControllerPublishVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition, "controller-publish-secret-name", "--secrets-dir")

	e.d.opts.SecretsDir = secretsDirWith(t, "admin", testKey)
	if _, err := e.d.ControllerPublishVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: e.id, NodeId: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if h := e.holders(t); len(h) != 0 {
		t.Fatalf("holders %v after unpublish", h)
	}
}

func TestNodeStageVolumeChecksTheAttachmentItCarries(t *testing.T) {
	e := newNodeEnv(t)
	c := fsCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	pub := func(node string) map[string]string {
		resp, err := e.d.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: e.volID, NodeId: node, VolumeCapability: c, Secrets: secrets()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.PublishContext
	}
	unpub := func(node string) {
		if _, err := e.d.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: e.volID, NodeId: node, Secrets: secrets()}); err != nil {
			t.Fatal(err)
		}
	}
	stale := pub("node-1")
	unpub("node-1")
	elsewhere := pub("node-2")
	unpub("node-2")
	current := pub("node-1")
	tests := []struct {
		name string
		pc   map[string]string
		code codes.Code
	}{
		{"an attachment that ended", stale, codes.FailedPrecondition},
		{"another node's attachment", elsewhere, codes.FailedPrecondition},
		{"a generation that is no number", map[string]string{attach.ContextGeneration: "x"}, codes.InvalidArgument},
		{"the current attachment handed to another node", map[string]string{
			attach.ContextNode: "node-2", attach.ContextGeneration: current[attach.ContextGeneration]}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := e.stageReq(c)
			req.PublishContext = tt.pc
			_, err := e.d.NodeStageVolume(context.Background(), req)
			wantCode(t, err, tt.code)
			e.wantNothingStaged(t)
		})
	}
	req := e.stageReq(c)
	req.PublishContext = current
	watchers := e.ceph.Calls["watchers"]
	if _, err := e.d.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatalf("stage with the current attachment: %v", err)
	}
	// The record makes the node the only holder: no second client listing
	// after the map.
	if n := e.ceph.Calls["watchers"] - watchers; n != 1 {
		t.Fatalf("%d client listings in a stage under an attach record, want the one before the map", n)
	}
}
