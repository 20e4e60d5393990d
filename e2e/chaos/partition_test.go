// Scenario node-partitioned: node-a writes (and fsyncs) to a ReadWriteOnce
// volume when the CO gives it up as lost (the out-of-service taint) and
// detaches the volume while node-a still has it open. The controller's
// fencing path blocklists node-a's Ceph client before it releases the
// claim; the volume then moves to node-b. Nothing node-a writes after the
// fence may reach Ceph (double_writers), everything it had acknowledged
// must be on node-b (lost_acknowledged_writes), and once node-a's kubelet
// comes back and unstages, nothing of its mapping may be left
// (stale_mappings_left). Writes the fenced node keeps trying must fail, not
// hang. It runs with krbd and rbd-nbd in the real-kernel guest (make
// test-kernel, suite chaos), where two node plugins in one kernel are two
// Ceph clients (krbd with noshare).
package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

const (
	chunkSize   = 4096 // ext4's block: each chunk lands 4 KiB-aligned in the image
	writeChunks = 16   // one write: 64 KiB
	writeSize   = chunkSize * writeChunks
)

var (
	magicBefore = []byte("RBDCSI-PART-ACK\x00") // written while node-a held the volume
	magicAfter  = []byte("RBDCSI-PART-LATE")    // written after the fence completed
)

// chunk is the content of chunk c of write seq: a magic saying which side
// of the fence the write started on, the write's number and a filler
// derived from both, so that a torn or misplaced chunk never verifies.
func chunk(after bool, seq uint64, c int) []byte {
	b := make([]byte, chunkSize)
	magic := magicBefore
	if after {
		magic = magicAfter
	}
	copy(b, magic)
	binary.LittleEndian.PutUint64(b[16:], seq)
	binary.LittleEndian.PutUint64(b[24:], uint64(c))
	x := seq*0x9E3779B97F4A7C15 + uint64(c) + 1
	for i := 32; i+8 <= chunkSize; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}

func writeBlock(after bool, seq uint64) []byte {
	b := make([]byte, 0, writeSize)
	for c := range writeChunks {
		b = append(b, chunk(after, seq, c)...)
	}
	return b
}

// fencedWriter is the application on node-a: it writes block seq at offset
// seq*64 KiB and fsyncs, and goes on trying after failures, as an
// application that retries would.
type fencedWriter struct {
	mu        sync.Mutex
	seq       uint64
	acked     uint64 // writes acknowledged (fsync returned) before the first failure
	failures  int
	firstFail time.Time
	firstErr  error
	lateOK    int // late writes whose fsync returned success: never proof that they reached Ceph
	late      bool
	stopOnce  sync.Once
	quit      chan struct{}
	done      chan struct{}
}

func startFencedWriter(t *testing.T, path string) *fencedWriter {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("node-a's application: %v", err)
	}
	w := &fencedWriter{quit: make(chan struct{}), done: make(chan struct{})}
	go w.run(fh)
	return w
}

func (w *fencedWriter) run(fh *os.File) {
	defer close(w.done)
	defer fh.Close()
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		w.mu.Lock()
		seq, late := w.seq, w.late
		w.seq++
		w.mu.Unlock()
		_, err := fh.WriteAt(writeBlock(late, seq), int64(seq)*writeSize)
		if err == nil {
			err = fh.Sync()
		}
		w.mu.Lock()
		switch {
		case err != nil:
			w.failures++
			if w.firstFail.IsZero() {
				w.firstFail, w.firstErr = time.Now(), err
			}
		case late:
			w.lateOK++
		case w.failures == 0:
			w.acked = seq + 1
		}
		failed := w.failures > 0
		w.mu.Unlock()
		// A steady pace (at most 50 writes a second) keeps the 1 GiB
		// filesystem far from full for the scenario's length.
		pause := 20 * time.Millisecond
		if failed {
			pause = 100 * time.Millisecond
		}
		time.Sleep(pause)
	}
}

// fenced marks the writes that start from now on as late: the fence is in
// place, and none of them may reach Ceph.
func (w *fencedWriter) fenced() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.late = true
}

func (w *fencedWriter) snapshot() (acked uint64, failures int, firstFail time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.failures, w.firstFail
}

// waitAcked waits until n writes were acknowledged.
func (w *fencedWriter) waitAcked(n uint64, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if acked, failures, _ := w.snapshot(); acked >= n || failures > 0 {
			return acked >= n
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitFailure waits up to within for the first failed write: when it
// failed, and with what.
func (w *fencedWriter) waitFailure(within time.Duration) (time.Time, error, bool) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		first, err := w.firstFail, w.firstErr
		w.mu.Unlock()
		if err != nil {
			return first, err, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Time{}, nil, false
}

// errnoText is the system error of a failed write without its path.
func errnoText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// stop ends the application; it reports whether its goroutine came back
// (a write blocked in the kernel keeps it).
func (w *fencedWriter) stop(within time.Duration) bool {
	w.stopOnce.Do(func() { close(w.quit) })
	select {
	case <-w.done:
		return true
	case <-time.After(within):
		return false
	}
}

// TestChaosNodePartitionedVolumeMovesThroughFencing: see the file comment.
func TestChaosNodePartitionedVolumeMovesThroughFencing(t *testing.T) {
	requireChaos(t)
	l := startLab(t)
	if l.noAttach {
		t.Skip("node-partitioned moves the volume through ControllerUnpublishVolume: unset RBDCSI_TWONODE_NO_ATTACH")
	}
	fig := newFigure("node-partitioned")
	defer fig.print(t)
	fig.set("mapper", harness.Mapper(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a, b := l.nodes[0], l.nodes[1]
	vol := l.createVolume(ctx, t, "pvc-partitioned")
	image := vol.VolumeContext["imageName"]
	if _, staged := l.attachAndStage(ctx, t, 0, a, vol); !staged {
		t.Fatal("node-a could not attach and stage a fresh volume")
	}
	w := startFencedWriter(t, filepath.Join(l.staging(a, 0), "data.bin"))
	t.Cleanup(func() {
		// A step that failed must not leave a mounted, mapped volume
		// behind (on a host, a stuck one blocks sync(2) for everyone).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		w.stop(time.Minute)
		for _, nd := range l.nodes {
			if err := l.unstageWithRetries(ctx, nd, vol); err != nil {
				t.Errorf("clean-up: unstage on %s: %v", nd.id, err)
			}
		}
	})
	if !w.waitAcked(20, 2*time.Minute) {
		_, failures, _ := w.snapshot()
		t.Fatalf("node-a's application did not complete 20 writes before the fence (%d failures)", failures)
	}

	// The CO gives node-a up and detaches while node-a still has the image
	// open: the controller fences node-a's client, then releases the claim.
	listed := l.blocklistEntries(t)
	_, early, _ := w.snapshot()
	fig.zero(t, "node_a_failures_before_fence", early, "(a write failed before the fence: what follows would not show the fence's effect)")
	t0 := time.Now()
	if _, err := l.ctrl.Controller().ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: a.id, Secrets: l.pool.Secrets()}); err != nil {
		t.Fatalf("detach from the lost node-a: %v", err)
	}
	fenceDone := time.Now()
	w.fenced()
	acked, _, _ := w.snapshot()
	fig.set("acked_before_fence", acked)
	fig.set("fence_seconds", fmt.Sprintf("%.1f", fenceDone.Sub(t0).Seconds()))
	fenced := l.blocklistEntries(t) - listed
	fig.set("clients_fenced", fenced)
	if listed < 0 || fenced < 1 {
		t.Errorf("the detach of node-a, which had the image open, added %d blocklist entries; want at least 1", fenced)
	}

	// Node-a's writes must now fail, not hang.
	hung := 0
	if firstFail, err, ok := w.waitFailure(time.Minute); ok {
		// from the fence's start: the blocklist may take effect before the
		// detach call returns
		fig.set("seconds_to_failed_write", fmt.Sprintf("%.1f", firstFail.Sub(t0).Seconds()))
		fig.set("node_a_error", strconv.Quote(errnoText(err)))
	} else {
		hung = 1
	}
	fig.zero(t, "node_a_writes_unfailed", hung, "(no write of node-a failed within a minute of the fence)")

	time.Sleep(2 * time.Second) // node-a's application keeps trying

	// Node-a's kubelet comes back: the application is gone, the volume is
	// unstaged there. (This comes before node-b's stage because one guest
	// kernel serves both node plugins: node-b would find node-a's mapping.)
	if !w.stop(time.Minute) {
		t.Errorf("node-a's application is blocked in a write a minute after it was told to stop")
	}
	_, failures, _ := w.snapshot()
	w.mu.Lock() // the writer may still be blocked in a write (stop timed out)
	lateOK := w.lateOK
	w.mu.Unlock()
	fig.set("node_a_failed_writes", failures)
	fig.set("node_a_late_fsync_ok", lateOK)
	unstaged := l.unstageWithRetries(ctx, a, vol)
	fig.set("node_a_unstaged", unstaged == nil)
	if unstaged != nil {
		t.Errorf("node-a's kubelet could not unstage the fenced volume: %v", unstaged)
	}
	stale := append(harness.Leftovers(a.dir), harness.KernelMappings(image)...)
	fig.zero(t, "stale_mappings_left", len(stale), stale)

	// Node-b takes the volume over the way the CO moves it.
	refusals, moveErr := l.moveTo(ctx, b, vol)
	fig.set("stage_refusals_on_node_b", refusals)
	if moveErr != nil {
		t.Errorf("the volume did not move to node-b: %v", moveErr)
	} else {
		fig.zero(t, "lost_acknowledged_writes", l.lostAcknowledged(t, b, acked))
	}

	// Node-b gives the volume back; then the image itself is searched for
	// any write node-a started after the fence.
	l.detach(ctx, t, 0, b, vol)
	fig.zero(t, "double_writers", l.lateWritesInImage(t, image), "(writes node-a started after the fence are in the image)")
	if _, err := l.ctrl.Controller().DeleteVolume(ctx, l.pool.DeleteReq(vol.VolumeId)); err != nil {
		t.Errorf("delete: %v", err)
	}
	fig.secretsInLog(t, l.drivers(), l.pool.Env.Admin.Key)
}

func (l *lab) createVolume(ctx context.Context, t *testing.T, name string) *csi.Volume {
	t.Helper()
	req := l.pool.CreateReq(name)
	req.CapacityRange.RequiredBytes = 1 << 30
	req.Parameters["mounter"] = harness.Mapper(t)
	if harness.Mapper(t) == "krbd" {
		// Two node plugins share the guest's kernel, whose krbd mappings
		// of one cluster share one client unless noshare: fencing node-a
		// would then fence node-b too. Real nodes have a kernel each.
		req.Parameters["mapOptions"] = "noshare"
	}
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap("ext4")}
	resp, err := l.ctrl.Controller().CreateVolume(ctx, req)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return resp.Volume
}

// moveTo publishes the volume to nd (which must be granted at once: the
// claim is free) and stages it there, retrying a FailedPrecondition stage
// for a minute as the kubelet would; it returns how many were refused.
func (l *lab) moveTo(ctx context.Context, nd *node, vol *csi.Volume) (int, error) {
	pub, err := l.ctrl.Controller().ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: vol.VolumeId, NodeId: nd.id, VolumeCapability: mountCap("ext4"), Secrets: l.pool.Secrets(),
	})
	if err != nil {
		return 0, fmt.Errorf("publish to %s after the fence: %w", nd.id, err)
	}
	staging := l.staging(nd, 0)
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return 0, err
	}
	stage := &csi.NodeStageVolumeRequest{
		VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: mountCap("ext4"),
		Secrets: l.pool.Secrets(), VolumeContext: vol.VolumeContext, PublishContext: pub.PublishContext,
	}
	calls, err := whileFailedPrecondition(time.Minute, 2*time.Second, func() error {
		_, err := nd.drv.Node().NodeStageVolume(ctx, stage)
		return err
	})
	if err != nil {
		return calls, fmt.Errorf("stage on %s after the fence: %w", nd.id, err)
	}
	return calls - 1, nil
}

// lostAcknowledged counts the writes node-a had acknowledged before the
// fence that node-b does not read back.
func (l *lab) lostAcknowledged(t *testing.T, nd *node, acked uint64) int {
	t.Helper()
	path := filepath.Join(l.staging(nd, 0), "data.bin")
	dropCaches(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("node-b reads node-a's file: %v", err)
		return int(acked)
	}
	lost := 0
	for seq := range acked {
		off := seq * writeSize
		if off+writeSize > uint64(len(data)) || !bytes.Equal(data[off:off+writeSize], writeBlock(false, seq)) {
			lost++
		}
	}
	return lost
}

// lateWritesInImage reads the whole image past the driver and counts the
// writes (by number) that node-a started after the fence.
func (l *lab) lateWritesInImage(t *testing.T, image string) int {
	t.Helper()
	_, ioctx := l.pool.Rados(t)
	img, err := rbd.OpenImageReadOnly(ioctx, image, rbd.NoSnapshot)
	if err != nil {
		t.Fatalf("open %s to search it: %v", image, err)
	}
	defer img.Close()
	size, err := img.GetSize()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	buf := make([]byte, 4<<20)
	for off := uint64(0); off < size; off += uint64(len(buf)) {
		n, err := img.ReadAt(buf, int64(off))
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("read %s at %d: %v", image, off, err)
		}
		for c := 0; c+chunkSize <= n; c += chunkSize {
			if bytes.HasPrefix(buf[c:], magicAfter) {
				seen[binary.LittleEndian.Uint64(buf[c+16:])] = true
			}
		}
	}
	return len(seen)
}

// blocklistEntries counts the cluster's blocklist entries: the fence adds
// one per client node-a had the image open with.
func (l *lab) blocklistEntries(t *testing.T) int {
	t.Helper()
	out, err := harness.CephCLI(t, l.pool.Env, "osd", "blocklist", "ls")
	if err != nil {
		t.Errorf("ceph osd blocklist ls: %v: %s", err, out)
		return -1
	}
	n := 0
	for _, line := range bytes.Split([]byte(out), []byte("\n")) {
		if bytes.Contains(line, []byte(":")) && !bytes.HasPrefix(line, []byte("listed")) {
			n++
		}
	}
	return n
}

// unstageWithRetries is the kubelet's unstage of a volume on a node that
// has come back: retried while refused, for up to two minutes.
func (l *lab) unstageWithRetries(ctx context.Context, nd *node, vol *csi.Volume) error {
	req := &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: l.staging(nd, 0)}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := nd.drv.Node().NodeUnstageVolume(ctx, req)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Second)
	}
}
