package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

// nodeVolume is one volume of scenario 3 with where it is staged and
// published and the checksum of what was written through it.
type nodeVolume struct {
	vol     *csi.Volume
	staging string
	target  string
	sum     [32]byte
}

func (v *nodeVolume) stageReq(p *harness.Pool) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging, VolumeCapability: mountCap("ext4"), Secrets: p.Secrets(), VolumeContext: v.vol.VolumeContext}
}

func (v *nodeVolume) publishReq() *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: mountCap("ext4"), VolumeContext: v.vol.VolumeContext}
}

// Scenario 3: the node plugin is SIGKILLed while volumes are staged and
// published (fuse mapper by default: a userspace process per image, the
// mapper with the most state to lose; e2e/kernel runs it with krbd and
// rbd-nbd, $RBDCSI_E2E_MAPPER). After the restart, the data written before the
// kill reads back in place, unpublish and unstage succeed, nothing is left
// mounted, attached or running under the test's directories, and a fresh
// stage reads the same data back from Ceph.
func TestChaosNodePluginKilledWhileStagedAndPublished(t *testing.T) {
	p, d, fig := startNodeScenario(t, "node-plugin-killed")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	vols := make([]*nodeVolume, 3)
	for i := range vols {
		vols[i] = setUpVolume(ctx, t, p, d, i)
	}
	d.Kill()
	d.Restart()
	// Reads must come through the mappings that survived, not the page
	// cache that holds what was written.
	targets := make([]string, len(vols))
	for i, v := range vols {
		targets[i] = v.target
	}
	dropCaches(t, targets...)

	fig.set("volumes", len(vols))
	fig.zero(t, "corrupt_in_place", countCorrupt(t, vols))
	fig.zero(t, "teardown_failed", tearDown(ctx, d, vols))
	left := append(harness.Leftovers(p.Dir), kernelLeftovers(t, vols)...)
	fig.zero(t, "leftovers", len(left), left)
	for _, v := range vols {
		if err := stagePublish(ctx, p, d, v); err != nil {
			t.Fatalf("restage: %v", err)
		}
	}
	fig.zero(t, "corrupt_after_restage", countCorrupt(t, vols))
	fig.zero(t, "teardown_failed_after_restage", tearDown(ctx, d, vols))
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
	for _, v := range vols {
		if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	}
}

// Scenario 3c: the node plugin dies after its mapper mapped the image and
// before it recorded the device (failpoint stage-after-map; a kill while
// the mapper runs leaves the same: the mapping outlives the plugin). The
// image then has a client, that mapping, which the kubelet's retried
// stage must adopt instead of refusing it as another node's; the volume
// then works, and unstage leaves nothing behind.
func TestChaosNodePluginKilledBetweenMapAndRecord(t *testing.T) {
	p, d, fig := startNodeScenario(t, "node-plugin-killed-after-map")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	v := createNodeVolume(ctx, t, p, d, 0)
	d.Restart("RBD_CSI_FAILPOINTS=stage-after-map")
	if _, err := d.Node().NodeStageVolume(ctx, v.stageReq(p)); err == nil {
		t.Fatal("NodeStageVolume succeeded although the plugin was to die after the map")
	}
	if !d.WaitExit(10 * time.Second) {
		t.Fatal("the failpoint did not kill the plugin")
	}
	d.Restart()
	// Ten tries at most: a refusal of the plugin's own mapping would
	// repeat for ever, and the kubelet would retry just as blindly.
	var err error
	tries := 0
	for tries < 10 {
		tries++
		if err = stagePublish(ctx, p, d, v); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	fig.set("stage_tries_after_restart", tries)
	if err != nil {
		t.Fatalf("the retried stage never succeeded: %v", err)
	}
	writeData(t, v)
	dropCaches(t, v.target)
	vols := []*nodeVolume{v}
	fig.zero(t, "corrupt", countCorrupt(t, vols))
	fig.zero(t, "teardown_failed", tearDown(ctx, d, vols))
	left := append(harness.Leftovers(p.Dir), kernelLeftovers(t, vols)...)
	fig.zero(t, "leftovers", len(left), left)
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// startNodeScenario starts a node scenario: it needs the suite enabled and
// root (it mounts filesystems and attaches devices), a node plugin, and a
// figure line that names the mapper.
func startNodeScenario(t *testing.T, scenario string) (*harness.Pool, *harness.Driver, *figure) {
	t.Helper()
	requireChaos(t)
	if os.Geteuid() != 0 {
		t.Skip("the node path mounts filesystems and attaches devices: run as root")
	}
	p, d := startNodePlugin(t)
	fig := newFigure(scenario)
	fig.set("mapper", harness.Mapper(t))
	return p, d, fig
}

// startNodePlugin starts a plugin serving controller and node with the
// mapper the run asks for.
func startNodePlugin(t *testing.T) (*harness.Pool, *harness.Driver) {
	t.Helper()
	p := harness.NewPool(t, clusterID)
	return p, startNodePluginOn(t, p)
}

// startNodePluginOn is startNodePlugin on a given pool, with extra flags.
func startNodePluginOn(t *testing.T, p *harness.Pool, extra ...string) *harness.Driver {
	t.Helper()
	return harness.Start(t, p.Dir, append([]string{
		"--mode=all", "--nodeid=chaos-node", "--cluster-config=" + p.ConfigPath(), "--instance-id=chaos-node",
		"--mapper=" + harness.Mapper(t), "--state-dir=" + filepath.Join(p.Dir, "state"), "--keyring-dir=" + filepath.Join(p.Dir, "keyrings"), "-v=10",
	}, extra...))
}

// kernelLeftovers lists krbd and rbd-nbd mappings of the volumes' images
// (they live outside the pool's directory).
func kernelLeftovers(t *testing.T, vols []*nodeVolume) []string {
	t.Helper()
	var out []string
	for _, v := range vols {
		out = append(out, harness.KernelMappings(v.vol.VolumeContext["imageName"])...)
	}
	return out
}

// setUpVolume creates, stages and publishes volume i and writes 1 MiB of
// random data through it, synced to the image.
func setUpVolume(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, i int) *nodeVolume {
	t.Helper()
	v := createNodeVolume(ctx, t, p, d, i)
	if err := stagePublish(ctx, p, d, v); err != nil {
		t.Fatal(err)
	}
	writeData(t, v)
	return v
}

// writeData writes 1 MiB of random data to v's published filesystem,
// synced to the image, and keeps its checksum.
func writeData(t *testing.T, v *nodeVolume) {
	t.Helper()
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	v.sum = sha256.Sum256(data)
	if err := writeSynced(filepath.Join(v.target, "data.bin"), data); err != nil {
		t.Fatal(err)
	}
}

// createNodeVolume creates volume i for the run's mapper, with its staging
// directory, and tears it down at the end of the test.
func createNodeVolume(ctx context.Context, t *testing.T, p *harness.Pool, d *harness.Driver, i int) *nodeVolume {
	t.Helper()
	req := p.CreateReq(fmt.Sprintf("pvc-node-%d", i))
	req.CapacityRange.RequiredBytes = 256 << 20
	req.Parameters["mounter"] = harness.Mapper(t)
	req.VolumeCapabilities = []*csi.VolumeCapability{mountCap("ext4")}
	resp, err := d.Controller().CreateVolume(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.Dir, fmt.Sprintf("vol%d", i))
	v := &nodeVolume{vol: resp.Volume, staging: filepath.Join(dir, "staging"), target: filepath.Join(dir, "pod", "mount")}
	t.Cleanup(func() { tearDown(context.Background(), d, []*nodeVolume{v}) })
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		t.Fatal(err)
	}
	return v
}

func stagePublish(ctx context.Context, p *harness.Pool, d *harness.Driver, v *nodeVolume) error {
	if _, err := d.Node().NodeStageVolume(ctx, v.stageReq(p)); err != nil {
		return fmt.Errorf("stage %s: %w", v.vol.VolumeId, err)
	}
	if _, err := d.Node().NodePublishVolume(ctx, v.publishReq()); err != nil {
		return fmt.Errorf("publish %s: %w", v.vol.VolumeId, err)
	}
	return nil
}

// tearDown unpublishes and unstages every volume and returns how many calls
// failed (it is also the test clean-up, where failures are ignored).
func tearDown(ctx context.Context, d *harness.Driver, vols []*nodeVolume) int {
	failed := 0
	for _, v := range vols {
		if _, err := d.Node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.vol.VolumeId, TargetPath: v.target}); err != nil {
			failed++
		}
		if _, err := d.Node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging}); err != nil {
			failed++
		}
	}
	return failed
}

// countCorrupt reads every volume's file back and counts those whose
// checksum differs from what was written.
func countCorrupt(t *testing.T, vols []*nodeVolume) int {
	t.Helper()
	bad := 0
	for _, v := range vols {
		data, err := os.ReadFile(filepath.Join(v.target, "data.bin"))
		if sum := sha256.Sum256(data); err != nil || !bytes.Equal(sum[:], v.sum[:]) {
			t.Logf("%s: read error %v or checksum mismatch", v.vol.VolumeId, err)
			bad++
		}
	}
	return bad
}

func writeSynced(path string, data []byte) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// dropCaches writes back the filesystems holding paths (syncfs) and drops
// the kernel's clean page cache, so that reads come from the mappings.
// Never sync(2): that would also wait for any other node's filesystem,
// including a fenced one whose writes can never complete.
func dropCaches(t *testing.T, paths ...string) {
	t.Helper()
	for _, path := range paths {
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Syncfs(int(fh.Fd()))
		fh.Close()
		if err != nil {
			t.Fatalf("syncfs %s: %v", path, err)
		}
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatalf("drop the page cache: %v", err)
	}
}

// Scenario 3b: an application keeps writing (and fsyncing) to a published
// volume while the node plugin is SIGKILLed and restarted. The mapping
// must not depend on the plugin process: with krbd the kernel serves I/O,
// with rbd-nbd and fuse a daemon the plugin started does, and that daemon
// must outlive the plugin. Figures: writes before, during and after the
// plugin's absence, failed writes, the longest stall, and whether what the
// writer wrote reads back from Ceph after a restage.
func TestChaosNodeWriterKeepsWritingAcrossPluginRestart(t *testing.T) {
	p, d, fig := startNodeScenario(t, "node-writer-across-plugin-restart")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	v := setUpVolume(ctx, t, p, d, 0)

	w := startWriter(filepath.Join(v.target, "writer.bin"))
	w.waitWrites(20)
	before := w.count()
	d.Kill()
	killed := w.count()
	time.Sleep(3 * time.Second) // the application runs on without a plugin
	d.Restart()
	restarted := w.count()
	w.waitWrites(restarted + 20)
	sum, errs, stall := w.stop()

	fig.set("writes_before_kill", before)
	fig.set("writes_while_plugin_dead", restarted-killed)
	fig.set("writes_after_restart", w.count()-restarted)
	fig.set("max_stall_ms", stall.Milliseconds())
	fig.zero(t, "write_errors", errs, w.firstErr)
	if restarted == killed {
		t.Errorf("no write completed during the 3 s the plugin was dead")
	}
	checkWriterAfterRestage(ctx, t, fig, p, d, v, sum)
}

// checkWriterAfterRestage ends a writer scenario: the volume unstages, a
// fresh stage reads back (page cache dropped) exactly what the writer
// wrote (sum), it unstages again leaving nothing behind, and is deleted.
func checkWriterAfterRestage(ctx context.Context, t *testing.T, fig *figure, p *harness.Pool, d *harness.Driver, v *nodeVolume, sum [32]byte) {
	t.Helper()
	fig.zero(t, "teardown_failed", tearDown(ctx, d, []*nodeVolume{v}))
	if err := stagePublish(ctx, p, d, v); err != nil {
		t.Fatalf("restage: %v", err)
	}
	dropCaches(t, v.target)
	data, err := os.ReadFile(filepath.Join(v.target, "writer.bin"))
	corrupt := 0
	if got := sha256.Sum256(data); err != nil || got != sum {
		corrupt = 1
	}
	fig.zero(t, "writer_data_corrupt_after_restage", corrupt, err)
	fig.zero(t, "teardown_failed_after_restage", tearDown(ctx, d, []*nodeVolume{v}))
	left := append(harness.Leftovers(p.Dir), kernelLeftovers(t, []*nodeVolume{v})...)
	fig.zero(t, "leftovers", len(left), left)
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// writer appends 64 KiB blocks to a file, each followed by fsync, until
// stopped; it records failures and the longest gap between two completed
// writes.
type writer struct {
	mu       sync.Mutex
	n        int
	errs     int
	firstErr error
	stall    time.Duration
	hash     hash.Hash
	quit     chan struct{}
	done     chan struct{}
	progress chan struct{}
}

func startWriter(path string) *writer {
	w := &writer{hash: sha256.New(), quit: make(chan struct{}), done: make(chan struct{}), progress: make(chan struct{}, 1)}
	go w.run(path)
	return w
}

func (w *writer) run(path string) {
	defer close(w.done)
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		w.fail(err)
		return
	}
	defer fh.Close()
	block := make([]byte, 64<<10)
	last := time.Now()
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		_, _ = rand.Read(block)
		if _, err := fh.Write(block); err != nil {
			w.fail(err)
			return
		}
		if err := fh.Sync(); err != nil {
			w.fail(err)
			return
		}
		now := time.Now()
		w.mu.Lock()
		w.n++
		w.hash.Write(block)
		w.stall = max(w.stall, now.Sub(last))
		w.mu.Unlock()
		last = now
		select {
		case w.progress <- struct{}{}:
		default:
		}
	}
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

func (w *writer) errors() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// waitWritesFor is waitWrites bounded by d: whether n writes completed.
func (w *writer) waitWritesFor(n int, d time.Duration) bool {
	deadline := time.After(d)
	for w.count() < n {
		select {
		case <-w.progress:
		case <-w.done:
			return w.count() >= n
		case <-deadline:
			return false
		}
	}
	return true
}

// waitWrites waits until n writes completed or the writer stopped.
func (w *writer) waitWrites(n int) {
	for w.count() < n {
		select {
		case <-w.progress:
		case <-w.done:
			return
		}
	}
}

// stop ends the writer and returns the checksum of what it wrote, its
// failures and its longest stall.
func (w *writer) stop() ([32]byte, int, time.Duration) {
	close(w.quit)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var sum [32]byte
	copy(sum[:], w.hash.Sum(nil))
	return sum, w.errs, w.stall
}
