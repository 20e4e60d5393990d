package node

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
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

// With the exclusive-lock feature (not among the defaults, which keep the
// in-tree `layering`; see docs/operations.md "Single writer across nodes"), the
// mapping of a staged volume owns the image's exclusive lock once it has
// written, and releases it at unstage: a librbd client elsewhere sees the
// owner. Runs with every mapper (fuse by default).
func TestExclusiveLockIsOwnedByTheMappingWhileStaged(t *testing.T) {
	f := newFixture(t, "ext4")
	f.params = map[string]string{"imageFeatures": "layering,exclusive-lock"}
	f.create(t, 256<<20)
	f.stagePublish(t)
	writeRandom(t, filepath.Join(f.target(), "data"), 1<<20)
	_, io := (&harness.Pool{Env: f.env}).Rados(t)
	// lock_get_owners refuses a read-only open (EINVAL); this one never
	// writes, so it never asks for the lock.
	img, err := rbd.OpenImage(io, f.vol.VolumeContext["imageName"], rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	owners, err := img.LockGetOwners()
	if err != nil || len(owners) != 1 || owners[0].Mode != rbd.LockModeExclusive {
		t.Fatalf("lock owners while staged = %v, %v; want the mapping as exclusive owner", owners, err)
	}
	t.Logf("exclusive lock owner while staged with %s: %s", f.mapper, owners[0].Owner)
	f.unpublishUnstage(t)
	if owners, err := img.LockGetOwners(); err != nil || len(owners) != 0 {
		t.Fatalf("lock owners after unstage = %v, %v; want none", owners, err)
	}
}
