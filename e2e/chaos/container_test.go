package chaos

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// The log lines of the node plugin's start-up re-attach that the
// scenarios below look for.
const (
	logReattached   = "Start-up re-attach: device served again"
	logNoCredential = "Start-up re-attach: no credential for the volume's cluster"
)

// requireRBDNBD skips the container-restart scenarios for the mappers they
// do not concern: krbd's device is served by the kernel, which no container
// restart stops; fuse's loop device does not wait for a new server.
func requireRBDNBD(t *testing.T) {
	t.Helper()
	requireChaos(t)
	if os.Geteuid() != 0 {
		t.Skip("the node path mounts filesystems and attaches devices: run as root")
	}
	if m := harness.Mapper(t); m != mapper.RBDNBD {
		t.Skipf("mapper %s: only rbd-nbd's serving processes die with the plugin's container (run with %s=rbd-nbd, e2e/kernel does)", m, harness.MapperEnv)
	}
}

// nodeCredentialDir is a --secrets-dir for the node plugin holding a
// least-privilege user of the pool (mon and osd 'profile rbd'), the caps
// the README asks for.
func nodeCredentialDir(t *testing.T, p *harness.Pool) (dir, key string) {
	t.Helper()
	user := "chaos-node-" + strings.TrimSuffix(p.Prefix, "-")
	key = harness.RestrictedUser(t, p.Env, user, harness.PoolUserCaps(p.Env.Pool, false)...)
	dir = filepath.Join(p.Dir, "node-secrets", p.ClusterID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"userID": user, "userKey": key} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Dir(dir), key
}

// killContainer does to the node plugin what a Kubernetes container
// restart does: the plugin and every rbd-nbd process it started die.
func killContainer(t *testing.T, d *harness.Driver, v *nodeVolume) {
	t.Helper()
	d.Kill()
	if killed := harness.KillMapperDaemons(v.vol.VolumeContext["imageName"]); len(killed) == 0 {
		t.Fatalf("no rbd-nbd process served %s", v.vol.VolumeContext["imageName"])
	}
}

// Scenario 3c: a writer keeps writing (64 KiB + fsync) to an rbd-nbd
// volume while the node plugin's container restarts: the plugin and its
// rbd-nbd daemons are SIGKILLed, and the plugin comes back 3 s later with
// a credential of its own (--secrets-dir). The kernel queues the I/O
// (--nbd-reattach-timeout), the plugin's start-up pass re-attaches a new
// rbd-nbd to the device, and the writer goes on without an error; what it
// wrote reads back from Ceph after a restage.
func TestChaosNodeContainerRestartReattachesRBDNBD(t *testing.T) {
	requireRBDNBD(t)
	p := harness.NewPool(t, clusterID)
	secretsDir, nodeKey := nodeCredentialDir(t, p)
	d := startNodePluginOn(t, p, "--secrets-dir="+secretsDir)
	fig := newFigure("node-container-restart-rbd-nbd")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	v := setUpVolume(ctx, t, p, d, 0)

	w := startWriter(filepath.Join(v.target, "writer.bin"))
	w.waitWrites(20)
	before := w.count()
	killContainer(t, d, v)
	killed := w.count()
	time.Sleep(3 * time.Second) // the container restarts
	d.Restart()
	restarted := time.Now()
	atRestart := w.count()
	resumed := w.waitWritesFor(atRestart+20, 5*time.Minute)
	resumeTook := time.Since(restarted)
	sum, errs, stall := w.stop()

	fig.set("writes_before_kill", before)
	fig.set("writes_while_container_dead", atRestart-killed)
	fig.set("writes_after_restart", w.count()-atRestart)
	fig.set("max_stall_ms", stall.Milliseconds())
	fig.set("restart_to_20_writes_ms", resumeTook.Milliseconds())
	fig.zero(t, "write_errors", errs, w.firstErr)
	if !resumed {
		t.Errorf("the writer did not complete 20 writes within 5 min of the restart")
	}
	if logLine(t, d, logReattached, v.vol.VolumeId) == "" {
		t.Errorf("the plugin did not log the re-attach of %s", v.vol.VolumeId)
	}
	fig.zero(t, "teardown_failed", tearDown(ctx, d, []*nodeVolume{v}))
	if err := stagePublish(ctx, p, d, v); err != nil {
		t.Fatalf("restage: %v", err)
	}
	dropPageCache(t)
	data, err := os.ReadFile(filepath.Join(v.target, "writer.bin"))
	corrupt := 0
	if got := sha256.Sum256(data); err != nil || got != sum {
		corrupt = 1
	}
	fig.zero(t, "writer_data_corrupt_after_restage", corrupt, err)
	fig.zero(t, "teardown_failed_after_restage", tearDown(ctx, d, []*nodeVolume{v}))
	left := append(harness.Leftovers(p.Dir), kernelLeftovers(t, []*nodeVolume{v})...)
	fig.zero(t, "leftovers", len(left), left)
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key, nodeKey)
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// Scenario 3d: the same container restart without a node credential, and
// a reattach timeout of 20 s: what happens. The plugin logs one line
// naming the volume and what to configure and leaves the device alone;
// the writer's I/O stalls, then fails once the kernel gives up on the
// device; NodeGetVolumeStats reports the volume abnormal. What was synced
// before the restart reads back after a restage.
func TestChaosNodeContainerRestartWithoutNodeCredential(t *testing.T) {
	requireRBDNBD(t)
	p := harness.NewPool(t, clusterID)
	const wait = 20 * time.Second
	d := startNodePluginOn(t, p, "--nbd-reattach-timeout="+wait.String())
	fig := newFigure("node-container-restart-rbd-nbd-no-credential")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	v := setUpVolume(ctx, t, p, d, 0)

	w := startWriter(filepath.Join(v.target, "writer.bin"))
	w.waitWrites(20)
	killContainer(t, d, v)
	killedAt := time.Now()
	d.Restart()
	failed := w.waitDone(5 * time.Minute)
	failedAfter := time.Since(killedAt)
	synced := w.count()
	sum, errs, stall := w.stop()

	fig.set("reattach_timeout_s", int(wait.Seconds()))
	fig.set("writer_failed", failed)
	fig.set("kill_to_write_error_ms", failedAfter.Milliseconds())
	fig.set("max_stall_ms", stall.Milliseconds())
	fig.set("write_errors", errs)
	fig.set("first_error", w.firstErr)
	if !failed || errs == 0 {
		t.Errorf("the writer neither failed nor went on: %d errors after %v", errs, failedAfter)
	}
	line := logLine(t, d, logNoCredential, v.vol.VolumeId)
	fig.set("log_line", line)
	if line == "" || !strings.Contains(line, "--secrets-dir") {
		t.Errorf("no log line names the volume, its missing credential and --secrets-dir")
	}

	health, err := d.Node().NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging})
	problems := health.GetVolumeHealth().GetHealthStatuses()
	if err != nil || len(problems) == 0 {
		t.Errorf("NodeGetVolumeHealth = %v, %v; want the volume abnormal", health, err)
	} else {
		fig.set("health", problems[0].GetMessage())
	}
	fig.zero(t, "teardown_failed", tearDown(ctx, d, []*nodeVolume{v}))
	if err := stagePublish(ctx, p, d, v); err != nil {
		t.Fatalf("restage: %v", err)
	}
	dropPageCache(t)
	data, err := os.ReadFile(filepath.Join(v.target, "writer.bin"))
	corrupt := 0
	if n := synced * 64 << 10; err != nil || len(data) < n || sha256.Sum256(data[:n]) != sum {
		corrupt = 1
	}
	fig.zero(t, "synced_data_corrupt_after_restage", corrupt, err)
	fig.zero(t, "teardown_failed_after_restage", tearDown(ctx, d, []*nodeVolume{v}))
	left := append(harness.Leftovers(p.Dir), kernelLeftovers(t, []*nodeVolume{v})...)
	fig.zero(t, "leftovers", len(left), left)
	if _, err := d.Controller().DeleteVolume(ctx, p.DeleteReq(v.vol.VolumeId)); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// logLine returns the first line of the plugin's log holding every one
// of subs ("" if none).
func logLine(t *testing.T, d *harness.Driver, subs ...string) string {
	t.Helper()
	data, err := os.ReadFile(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
			return l
		}
	}
	return ""
}

// waitDone waits up to d for the writer to stop by itself (a failed
// write) and says whether it did.
func (w *writer) waitDone(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}
