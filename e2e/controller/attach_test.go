package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/attach"
)

func publishReq(f *fixture, id, node string) *csi.ControllerPublishVolumeRequest {
	return &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, Secrets: f.Secrets(), VolumeCapability: &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}
}

func unpublishReq(f *fixture, id, node string) *csi.ControllerUnpublishVolumeRequest {
	return &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node, Secrets: f.Secrets()}
}

// crashAt arms point, expects call to die with the driver, and restarts it.
func crashAt(t *testing.T, d *harness.Driver, point string, call func() error) {
	t.Helper()
	d.Restart("RBD_CSI_FAILPOINTS=" + point)
	if err := call(); err == nil {
		t.Fatalf("%s: call succeeded although the driver was to die", point)
	}
	if !d.WaitExit(10 * time.Second) {
		t.Fatalf("%s: failpoint did not kill the driver", point)
	}
	d.Restart()
}

// TestAttachCrashAtEachStepThenRetryCompletes kills the controller inside
// publish, a fencing unpublish and delete; each retry finishes the work,
// a single-node volume is never granted to two nodes, and the fenced
// client can no longer write.
func TestAttachCrashAtEachStepThenRetryCompletes(t *testing.T) {
	f := newFixture(t)
	d := harness.Start(t, f.Dir, f.args("attach-crash"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := d.Controller().CreateVolume(ctx, f.CreateReq("pvc-attach"))
	if err != nil {
		t.Fatal(err)
	}
	id, img := resp.Volume.VolumeId, harness.ImageName(resp.Volume.VolumeId)

	crashAt(t, d, "publish-before-reply", func() error {
		_, err := d.Controller().ControllerPublishVolume(ctx, publishReq(f, id, "node-a"))
		return err
	})
	pub, err := d.Controller().ControllerPublishVolume(ctx, publishReq(f, id, "node-a"))
	if err != nil {
		t.Fatalf("publish retry: %v", err)
	}
	_, err = d.Controller().ControllerPublishVolume(ctx, publishReq(f, id, "node-b"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publish to a second node = %v, want FailedPrecondition", err)
	}
	_, err = d.Controller().DeleteVolume(ctx, f.DeleteReq(id))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("delete of an attached volume = %v, want FailedPrecondition", err)
	}

	// node-a is lost with the image open: a client of its own.
	lost := openAsLostNode(t, f, img)
	if _, err := lost.WriteAt([]byte("before the fence"), 0); err != nil {
		t.Fatalf("lost node's write before the fence: %v", err)
	}
	crashAt(t, d, "unpublish-after-fence", func() error {
		_, err := d.Controller().ControllerUnpublishVolume(ctx, unpublishReq(f, id, "node-a"))
		return err
	})
	// The window after the fence and before the release: the record still
	// gives the volume to node-a, so node-b waits for the retry.
	_, err = d.Controller().ControllerPublishVolume(ctx, publishReq(f, id, "node-b"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publish to node-b between node-a's fence and its release = %v, want FailedPrecondition", err)
	}
	if _, err := d.Controller().ControllerUnpublishVolume(ctx, unpublishReq(f, id, "node-a")); err != nil {
		t.Fatalf("unpublish retry: %v", err)
	}
	wrote := make(chan error, 1)
	go func() { _, err := lost.WriteAt([]byte("after the fence!"), 0); wrote <- err }()
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the fenced client could still write")
		}
		t.Logf("fenced client's write failed as it must: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the fenced client's write hung instead of failing")
	}
	pubB, err := d.Controller().ControllerPublishVolume(ctx, publishReq(f, id, "node-b"))
	if err != nil {
		t.Fatalf("publish to node-b after fencing node-a: %v", err)
	}
	if pubB.PublishContext[attach.ContextGeneration] == pub.PublishContext[attach.ContextGeneration] {
		t.Errorf("node-b got node-a's generation %v", pubB.PublishContext)
	}
	if _, err := d.Controller().ControllerUnpublishVolume(ctx, unpublishReq(f, id, "node-b")); err != nil {
		t.Fatal(err)
	}

	crashAt(t, d, "delete-before-drop-attachments", func() error { _, err := d.Controller().DeleteVolume(ctx, f.DeleteReq(id)); return err })
	if _, err := d.Controller().DeleteVolume(ctx, f.DeleteReq(id)); err != nil {
		t.Fatalf("delete retry: %v", err)
	}
	_, io := f.Rados(t)
	if _, err := io.Stat("rbd-csi.attach." + img); !errors.Is(err, rados.ErrNotFound) {
		t.Fatalf("attachment record after delete: %v, want it gone", err)
	}
}

// openAsLostNode opens the image read-write through a client of its own,
// as a node plugin's mapper does, with OSD operations bounded so that a
// fenced write fails instead of waiting forever.
func openAsLostNode(t *testing.T, f *fixture, img string) *rbd.Image {
	t.Helper()
	_, io := f.RadosWith(t, map[string]string{"rados_osd_op_timeout": "10", "rados_mon_op_timeout": "10"})
	im, err := rbd.OpenImage(io, img, rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = im.Close() })
	return im
}
