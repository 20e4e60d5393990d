package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// The seed's failure: a StorageClass asks for journaling, which no
// kernel rbd driver supports. With krbd, NodeStageVolume must refuse with
// FailedPrecondition naming the feature and the ways out, and leave
// nothing mapped; the same volume then stages with rbd-nbd (userspace
// librbd supports every feature).
func TestKRBDStageRefusesJournalingThenRBDNBDStagesIt(t *testing.T) {
	f := newFixture(t, "ext4")
	if f.mapper != mapper.KRBD {
		t.Skipf("runs with RBDCSI_E2E_MAPPER=krbd only (this run uses %s): the refusal comes from the kernel rbd driver", f.mapper)
	}
	f.params = map[string]string{"imageFeatures": "layering,exclusive-lock,journaling"}
	f.create(t, 256<<20)
	spec := f.env.Pool + "/" + f.vol.VolumeContext["imageName"]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := f.drv.Node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: f.vol.VolumeId, StagingTargetPath: f.stagingDir(t), VolumeCapability: f.capability(),
		Secrets: f.secrets(), VolumeContext: f.vol.VolumeContext,
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stage with krbd: %v; want FailedPrecondition", err)
	}
	for _, want := range []string{"journaling", "rbd feature disable " + spec + " journaling", "imageFeatures", "mounter: rbd-nbd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("stage error does not say %q: %v", want, err)
		}
	}

	// The same volume, staged by a StorageClass that says mounter: rbd-nbd.
	f.vol.VolumeContext["mounter"] = mapper.RBDNBD
	f.stagePublish(t)
	f.unpublishUnstage(t)
}
