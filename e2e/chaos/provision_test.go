package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Scenario 1: 200 CreateVolume/DeleteVolume operations while the controller
// is SIGKILLed at random moments; the client retries every failed call
// until it succeeds. Afterwards the pool holds exactly the volumes the
// client believes exist, and nothing else of them is left: no trash entry
// after the purge, no image without its owner record, no id object of an
// image that does not exist.
func TestChaosCrashDuringProvisioningLosesNothing(t *testing.T) {
	requireChaos(t)
	p := harness.NewPool(t, clusterID)
	d := harness.Start(t, p.Dir, controllerArgs(p, "chaos-crash"))
	fig := newFigure("crash-during-provisioning")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	const ops, names = 200, 40
	var kills atomic.Int32
	believed := harness.Believed{}
	t.Cleanup(func() { deleteBelieved(t, p, d, believed) })
	start := time.Now()
	for i := range ops {
		name := fmt.Sprintf("pvc-%d", randN(names))
		call := believed.Step(p, d, name, randN(2) == 0)
		if err := d.Retry(ctx, d.WithRandomKill(80*time.Millisecond, &kills, call)); err != nil {
			t.Fatalf("op %d on %s: %v", i, name, err)
		}
	}
	if !d.Alive() {
		d.Restart()
	}
	fig.set("ops", ops)
	fig.set("sigkills", kills.Load())
	fig.set("seconds", int(time.Since(start).Seconds()))
	if kills.Load() == 0 {
		t.Fatal("the killer never fired: the scenario proved nothing")
	}

	images := p.Images(t)
	fig.set("images", len(images))
	fig.set("believed", len(believed))
	fig.zero(t, "images_minus_believed", len(images)-len(believed))
	orphans, missing := believed.Diff(images)
	fig.zero(t, "orphaned_images", len(orphans), orphans)
	fig.zero(t, "lost_volumes", len(missing), missing)
	fig.zero(t, "leaked_metadata", leakedMetadata(t, p, images))
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
}

// deleteBelieved removes the volumes the client holds, also when the
// scenario failed half way.
func deleteBelieved(t *testing.T, p *harness.Pool, d *harness.Driver, believed harness.Believed) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, id := range believed {
		err := d.Retry(ctx, func(c context.Context) error {
			_, err := d.Controller().DeleteVolume(c, p.DeleteReq(id))
			return err
		})
		if err != nil {
			t.Errorf("clean-up of %s: %v", id, err)
		}
	}
}

// leakedMetadata counts what a crash could leave besides images: trash
// entries the purge never removed (read from the rbd_trash omap, so that
// the entries rbd_trash_list hides count too), images without their owner
// record, and rbd_id objects (the name -> id records librbd writes first) of
// images that do not exist.
func leakedMetadata(t *testing.T, p *harness.Pool, images []string) int {
	t.Helper()
	conn, io := p.Rados(t)
	// A driver killed with an image open leaves a watch that the OSDs
	// drop only after 30 s; until then the mgr's purge is refused, and it
	// retries after 30 s, then 60 s, then 120 s.
	leaked := waitTrashRecordsGone(t, io, p.Prefix, 4*time.Minute)
	if len(leaked) > 0 {
		out, _, err := conn.MgrCommand([][]byte{[]byte(`{"prefix":"rbd task list","format":"json"}`)})
		t.Logf("ceph-mgr rbd tasks: %s (%v)", out, err)
	}
	for _, img := range images {
		ref := ceph.ImageRef{Cluster: p.Cluster(), Pool: p.Env.Pool, Name: img}
		info, err := p.Backend.StatImage(context.Background(), p.Env.Admin, ref)
		switch {
		case err != nil:
			// Listed in the pool but not openable: the remains of a
			// half-done create or removal.
			leaked = append(leaked, fmt.Sprintf("unreadable image %s: %v", img, err))
		case info.Metadata["rbd-csi.owner"] == "":
			leaked = append(leaked, "no owner record: "+img)
		}
	}
	for _, oid := range idObjects(t, io, p.Prefix) {
		if !slices.Contains(images, strings.TrimPrefix(oid, "rbd_id.")) {
			leaked = append(leaked, "stray "+oid)
		}
	}
	if len(leaked) > 0 {
		t.Logf("leaked: %v", leaked)
	}
	return len(leaked)
}

// waitTrashRecordsGone waits for the purges of the test's images and
// returns the rbd_trash records still naming one at the deadline.
func waitTrashRecordsGone(t *testing.T, io *rados.IOContext, prefix string, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		vals, err := io.GetAllOmapValues("rbd_trash", "", "id_", 512)
		if err != nil && !errors.Is(err, rados.ErrNotFound) {
			t.Fatal(err)
		}
		var left []string
		for key, val := range vals {
			if bytes.Contains(val, []byte(prefix)) {
				left = append(left, fmt.Sprintf("trash record %s (%q)", key, val))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// idObjects lists the pool's rbd_id.<prefix>* objects.
func idObjects(t *testing.T, io *rados.IOContext, prefix string) []string {
	t.Helper()
	var oids []string
	err := io.ListObjects(func(oid string) {
		if strings.HasPrefix(oid, "rbd_id."+prefix) {
			oids = append(oids, oid)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return oids
}

// randN is a uniform random number in [0, n).
func randN(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

// mountCap is a single-writer mount capability with fsType fs.
func mountCap(fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}
