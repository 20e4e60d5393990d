package chaos

import (
	"context"
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
	reattached := waitLogLine(t, d, 5*time.Minute, logReattached, v.vol.VolumeId)
	reattachTook := time.Since(restarted)
	resumed := w.waitWritesFor(atRestart+20, 5*time.Minute)
	resumeTook := time.Since(restarted)
	sum, errs, stall := w.stop()

	fig.set("writes_before_kill", before)
	fig.set("writes_while_container_dead", atRestart-killed)
	fig.set("writes_after_restart", w.count()-atRestart)
	fig.set("max_stall_ms", stall.Milliseconds())
	fig.set("restart_to_reattach_logged_ms", reattachTook.Milliseconds())
	fig.set("restart_to_20_writes_ms", resumeTook.Milliseconds())
	fig.zero(t, "write_errors", errs, w.firstErr)
	if !resumed {
		t.Errorf("the writer did not complete 20 writes within 5 min of the restart")
	}
	if !reattached {
		t.Errorf("the plugin did not log the re-attach of %s within 5 min", v.vol.VolumeId)
	}
	checkWriterAfterRestage(ctx, t, fig, p, d, v, sum)
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key, nodeKey)
}

// Scenario 3d: the same container restart without a node credential:
// what happens. The plugin logs one line naming the volume and what to
// configure and leaves the device alone; the writer stalls (no write, no
// error) and the volume's health is abnormal. Then the remedy available
// without a credential: a NodeStageVolume (a kubelet sends one for a new
// pod of the volume; an operator can too) re-attaches within the reattach
// timeout and the writer goes on. (Past the timeout, new I/O fails and I/O
// in flight when the daemon died stays blocked: e2e/kernel/README.md.)
func TestChaosNodeContainerRestartWithoutNodeCredential(t *testing.T) {
	requireRBDNBD(t)
	p := harness.NewPool(t, clusterID)
	const wait = 5 * time.Minute
	d := startNodePluginOn(t, p, "--nbd-reattach-timeout="+wait.String())
	fig := newFigure("node-container-restart-rbd-nbd-no-credential")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	v := setUpVolume(ctx, t, p, d, 0)

	w := startWriter(filepath.Join(v.target, "writer.bin"))
	w.waitWrites(20)
	killContainer(t, d, v)
	d.Restart()
	if !waitLogLine(t, d, time.Minute, logNoCredential, v.vol.VolumeId) {
		t.Errorf("no log line names %s and its missing credential within 1 min of the restart", v.vol.VolumeId)
	}
	line := logLine(t, d, logNoCredential, v.vol.VolumeId)
	fig.set("log_line", line)
	if !strings.Contains(line, "--secrets-dir") || !strings.Contains(line, "node.reattachCredentials") {
		t.Errorf("the no-credential line does not say what to configure: %s", line)
	}
	stalled := w.count()
	w.waitWritesFor(stalled+1, 20*time.Second)
	fig.set("writes_in_20s_after_the_line", w.count()-stalled)
	fig.set("write_errors_by_then", w.errors())
	if w.count() != stalled {
		t.Errorf("%d writes completed without a re-attach: the scenario did not kill the daemon", w.count()-stalled)
	}
	health, err := d.Node().NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging})
	if problems := health.GetVolumeHealth().GetHealthStatuses(); err != nil || len(problems) == 0 {
		t.Errorf("NodeGetVolumeHealth = %v, %v; want the volume abnormal", health, err)
	} else {
		fig.set("health", problems[0].GetMessage())
	}

	// The remedy: a stage re-attaches (once the dead client's watch has
	// expired, about 30 s after the kill: until then the image looks in
	// use elsewhere).
	staged := time.Now()
	attempts, err := restageUntilAccepted(ctx, p, d, v)
	fig.set("stage_attempts", attempts)
	if err != nil {
		t.Fatalf("NodeStageVolume did not re-attach: %v", err)
	}
	resumed := w.waitWritesFor(stalled+20, 5*time.Minute)
	fig.set("stage_to_20_writes_ms", time.Since(staged).Milliseconds())
	sum, errs, stall := w.stop()
	fig.set("max_stall_ms", stall.Milliseconds())
	fig.zero(t, "write_errors", errs, w.firstErr)
	if !resumed {
		t.Errorf("the writer did not complete 20 writes within 5 min of the re-attaching stage")
	}
	checkWriterAfterRestage(ctx, t, fig, p, d, v, sum)
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
}

// restageUntilAccepted repeats NodeStageVolume while the image still shows
// the dead rbd-nbd's watch (FailedPrecondition, "in use"), for up to 3 min.
func restageUntilAccepted(ctx context.Context, p *harness.Pool, d *harness.Driver, v *nodeVolume) (int, error) {
	return whileFailedPrecondition(3*time.Minute, 5*time.Second, func() error {
		_, err := d.Node().NodeStageVolume(ctx, v.stageReq(p))
		return err
	})
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

// waitLogLine waits up to d for a line of the plugin's log holding every
// one of subs, and says whether one came.
func waitLogLine(t *testing.T, d *harness.Driver, within time.Duration, subs ...string) bool {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if logLine(t, d, subs...) != "" {
			return true
		}
	}
	return false
}
