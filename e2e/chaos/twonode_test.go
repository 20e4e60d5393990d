// Scenario two-node-race: two node plugins (distinct node IDs, separate state
// directories, one host) for the same ReadWriteOnce volume through the CO's
// order, ControllerPublishVolume then NodeStageVolume, against one
// controller and a real Ceph, with the mapper harness.Mapper names (fuse by
// default). Issue 10 measured both nodes mounting read-write in 13 of 20
// rounds when NodeStageVolume's watcher check was the only guard;
// RBDCSI_TWONODE_NO_ATTACH=1 skips the publish step to measure that again.
package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// node is one node plugin and the directory its staging paths live in.
type node struct {
	id  string
	drv *harness.Driver
	dir string
}

type lab struct {
	pool  *harness.Pool
	ctrl  *harness.Driver
	nodes []*node
	// noAttach stages without ControllerPublishVolume, as before issue 10.
	noAttach bool
}

func startLab(t *testing.T) *lab {
	t.Helper()
	requireChaos(t)
	p := harness.NewPool(t, clusterID)
	if os.Geteuid() != 0 {
		t.Skip("node plugins mount filesystems and attach loop devices: run as root")
	}
	l := &lab{pool: p, noAttach: os.Getenv("RBDCSI_TWONODE_NO_ATTACH") == "1"}
	cdir := filepath.Join(p.Dir, "controller")
	mustMkdir(t, cdir)
	l.ctrl = harness.Start(t, cdir, controllerArgs(p, "twonode"))
	for _, id := range []string{"node-a", "node-b"} {
		dir := filepath.Join(p.Dir, id)
		mustMkdir(t, dir)
		d := harness.Start(t, dir, []string{
			"--mode=node", "--nodeid=" + id, "--cluster-config=" + p.ConfigPath(), "--mapper=" + harness.Mapper(t),
			"--state-dir=" + filepath.Join(dir, "state"), "--keyring-dir=" + filepath.Join(dir, "keyrings"), "-v=10",
		})
		l.nodes = append(l.nodes, &node{id: id, drv: d, dir: dir})
	}
	t.Cleanup(func() {
		for _, left := range harness.Leftovers(p.Dir) {
			t.Errorf("left behind: %s", left)
		}
	})
	return l
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
}

// rounds is $RBDCSI_TWONODE_ROUNDS, else 100 (the figure).
func rounds(t *testing.T) int {
	n, err := strconv.Atoi(os.Getenv("RBDCSI_TWONODE_ROUNDS"))
	if err != nil || n <= 0 {
		return 100
	}
	return n
}

// TestChaosTwoNodesRacingForOneRWOVolumeMountItOnce: in every round
// exactly one node mounts the fresh volume read-write; the other's publish
// is FailedPrecondition.
func TestChaosTwoNodesRacingForOneRWOVolumeMountItOnce(t *testing.T) {
	l := startLab(t)
	fig := newFigure("two-node-race")
	defer fig.print(t)
	n := rounds(t)
	fig.set("mapper", harness.Mapper(t))
	fig.set("attach", !l.noAttach)
	fig.set("rounds", n)
	start := time.Now()
	double, none := 0, 0
	for i := range n {
		switch mounted := l.round(t, i); mounted {
		case 1:
		case 0:
			none++
		default:
			double++
		}
	}
	fig.set("seconds", fmt.Sprintf("%.1f", time.Since(start).Seconds()))
	fig.zero(t, "double_rw_mounts", double)
	fig.zero(t, "rounds_without_mount", none)
	fig.secretsInLog(t, l.drivers(), l.pool.Env.Admin.Key)
}

func (l *lab) drivers() []*harness.Driver {
	out := []*harness.Driver{l.ctrl}
	for _, nd := range l.nodes {
		out = append(out, nd.drv)
	}
	return out
}

// round creates a volume, lets both nodes publish and stage it at once,
// counts the read-write mounts, and tears everything down.
func (l *lab) round(t *testing.T, i int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req := l.pool.CreateReq(fmt.Sprintf("pvc-race-%d", i))
	req.CapacityRange.RequiredBytes = 64 << 20
	req.Parameters["mounter"] = harness.Mapper(t)
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap("ext4")}
	resp, err := l.ctrl.Controller().CreateVolume(ctx, req)
	if err != nil {
		t.Fatalf("round %d: create: %v", i, err)
	}
	vol := resp.Volume
	staged := make([]bool, len(l.nodes))
	published := make([]bool, len(l.nodes))
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for k, nd := range l.nodes {
		wg.Go(func() {
			<-begin
			published[k], staged[k] = l.attachAndStage(ctx, t, i, nd, vol)
		})
	}
	close(begin)
	wg.Wait()
	if l.noAttach && !slices.Contains(staged, true) {
		// Both backed out (each saw the other after mapping): like its
		// kubelet, node-a tries again, now alone.
		published[0], staged[0] = l.attachAndStage(ctx, t, i, l.nodes[0], vol)
	}
	mounted := 0
	for k, nd := range l.nodes {
		if staged[k] && mountedRW(t, l.staging(nd, i)) {
			mounted++
		}
	}
	for k, nd := range l.nodes {
		if staged[k] || published[k] {
			l.detach(ctx, t, i, nd, vol) // unstaging what was never staged is a no-op
		}
	}
	if _, err := l.ctrl.Controller().DeleteVolume(ctx, l.pool.DeleteReq(vol.VolumeId)); err != nil {
		t.Fatalf("round %d: delete: %v", i, err)
	}
	return mounted
}

func (l *lab) staging(nd *node, i int) string {
	return filepath.Join(nd.dir, fmt.Sprintf("staging-%d", i))
}

// attachAndStage is the CO's order for one node; it reports whether the
// volume was published to the node and whether the node staged it. A
// refused publish must be FailedPrecondition.
func (l *lab) attachAndStage(ctx context.Context, t *testing.T, i int, nd *node, vol *csi.Volume) (published, staged bool) {
	pub := &csi.ControllerPublishVolumeResponse{}
	if !l.noAttach {
		var err error
		pub, err = l.ctrl.Controller().ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
			VolumeId: vol.VolumeId, NodeId: nd.id, VolumeCapability: mountCap("ext4"), Secrets: l.pool.Secrets(),
		})
		if status.Code(err) == codes.FailedPrecondition {
			return false, false
		}
		if err != nil {
			t.Errorf("round %d: publish to %s: %v", i, nd.id, err)
			return false, false
		}
	}
	published = !l.noAttach
	staging := l.staging(nd, i)
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Error(err)
		return published, false
	}
	_, err := nd.drv.Node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: mountCap("ext4"),
		Secrets: l.pool.Secrets(), VolumeContext: vol.VolumeContext, PublishContext: pub.PublishContext,
	})
	if l.noAttach && status.Code(err) == codes.FailedPrecondition {
		return false, false // the watcher check saw the other node
	}
	if err != nil {
		t.Errorf("round %d: stage on %s after its publish succeeded: %v", i, nd.id, err)
		return published, false
	}
	return published, true
}

func (l *lab) detach(ctx context.Context, t *testing.T, i int, nd *node, vol *csi.Volume) {
	t.Helper()
	// Like the kubelet, retry an unstage refused while the device is
	// still held: right after a mount, udev's probe of the new filesystem
	// can hold the loop device for a moment.
	unstage := &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: l.staging(nd, i)}
	_, err := whileFailedPrecondition(5*time.Second, 250*time.Millisecond, func() error {
		_, err := nd.drv.Node().NodeUnstageVolume(ctx, unstage)
		return err
	})
	if err != nil {
		t.Fatalf("round %d: unstage on %s: %v", i, nd.id, err)
	}
	if l.noAttach {
		return
	}
	if _, err := l.ctrl.Controller().ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: nd.id, Secrets: l.pool.Secrets()}); err != nil {
		t.Fatalf("round %d: unpublish from %s: %v", i, nd.id, err)
	}
}

// mountedRW reports whether path is a read-write mount point
// (/proc/self/mountinfo: field 5 is the mount point, 6 its options).
func mountedRW(t *testing.T, path string) bool {
	t.Helper()
	fh, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 5 && f[4] == path && strings.Split(f[5], ",")[0] == "rw" {
			return true
		}
	}
	return false
}
