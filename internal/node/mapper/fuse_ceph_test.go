package mapper

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// These tests map real images through rbd-fuse and loop devices. They need
// root, /dev/fuse, rbd-fuse, losetup, the rbd CLI and a cluster given by
// CEPH_MON_HOST, CEPH_ADMIN_KEY and CEPH_CONF (CEPH_POOL defaults to kube,
// CEPH_KEYRING is optional).

type cephEnv struct {
	mons    []string
	key     string
	conf    string
	pool    string
	keyring string
}

func needCeph(t *testing.T) cephEnv {
	t.Helper()
	env := cephEnv{
		key:     os.Getenv("CEPH_ADMIN_KEY"),
		conf:    os.Getenv("CEPH_CONF"),
		pool:    os.Getenv("CEPH_POOL"),
		keyring: os.Getenv("CEPH_KEYRING"),
	}
	mon := os.Getenv("CEPH_MON_HOST")
	switch {
	case mon == "" || env.key == "":
		t.Skip("skipping real-Ceph test: CEPH_MON_HOST and CEPH_ADMIN_KEY are not set (start one with ceph-lab/ceph-up.sh and source its env)")
	case os.Geteuid() != 0:
		t.Skip("skipping real-Ceph test: needs root for FUSE mounts and loop devices")
	}
	for _, bin := range []string{"rbd-fuse", "losetup", "rbd", "dd"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping real-Ceph test: %s not found", bin)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping real-Ceph test: no /dev/fuse: %v", err)
	}
	env.mons = strings.Split(mon, ",")
	if env.pool == "" {
		env.pool = "kube"
	}
	if env.keyring == "" {
		env.keyring = filepath.Join(t.TempDir(), "admin.keyring")
		if err := writeKeyringFile(env.keyring, "admin", env.key); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func (e cephEnv) image(name string) Image {
	return Image{Monitors: e.mons, User: "admin", Key: e.key, Pool: e.pool, Name: name, Features: ceph.FeatureLayering}
}

// rbd runs the rbd CLI as client.admin.
func (e cephEnv) rbd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.cli("rbd", args...)
	if err != nil {
		t.Fatalf("rbd %v: %v: %s", args, err, out)
	}
	return out
}

// cli runs a Ceph CLI tool as client.admin.
func (e cephEnv) cli(tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--id", "admin", "--keyring", e.keyring, "-m", strings.Join(e.mons, ",")}, args...)
	if e.conf != "" {
		full = append([]string{"-c", e.conf}, full...)
	}
	out, err := exec.CommandContext(ctx, tool, full...).CombinedOutput()
	return string(out), err
}

// removeImage deletes an image, waiting out watchers of killed clients.
func (e cephEnv) removeImage(t *testing.T, spec string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := e.cli("rbd", "rm", "--no-progress", spec)
		if err == nil {
			return
		}
		if !strings.Contains(out, "watchers") || time.Now().After(deadline) {
			t.Errorf("rbd rm %s: %v: %s", spec, err, out)
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// blocklistWatchers evicts the clients watching an image (used after
// killing rbd-fuse, whose watch would otherwise linger for 30 s).
func (e cephEnv) blocklistWatchers(t *testing.T, spec string) {
	t.Helper()
	out := e.rbd(t, "status", "--format", "json", spec)
	var st struct {
		Watchers []struct {
			Address string `json:"address"`
		} `json:"watchers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Logf("cannot parse rbd status: %v", err)
		return
	}
	for _, w := range st.Watchers {
		if out, err := e.cli("ceph", "osd", "blocklist", "add", w.Address); err != nil {
			t.Logf("blocklisting %s: %v: %s", w.Address, err, out)
		}
	}
}

// createImage makes a fresh layering-only image removed at test end.
func (e cephEnv) createImage(t *testing.T, sizeMB int) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "mappertest-" + hex.EncodeToString(b)
	e.rbd(t, "create", "--size", strconv.Itoa(sizeMB)+"M", "--image-feature", "layering", e.pool+"/"+name)
	t.Cleanup(func() { e.removeImage(t, e.pool+"/"+name) })
	return name
}

// fuseRig is a fuse mapper with private state and secret directories.
type fuseRig struct {
	cfg       Config
	stateDir  string
	secretDir string
}

func newFuseRig(t *testing.T) *fuseRig {
	t.Helper()
	r := &fuseRig{stateDir: t.TempDir(), secretDir: t.TempDir()}
	r.cfg = Config{StateDir: r.stateDir, SecretDir: r.secretDir}
	t.Cleanup(func() { r.assertNoLeftovers(t) })
	return r
}

// mapper returns a new Mapper value: a fresh one per call simulates a
// plugin restart (no in-memory state carries over).
func (r *fuseRig) mapper(t *testing.T) Mapper {
	t.Helper()
	m, err := New(Fuse, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mapFor maps and registers an unmap at test end (a no-op if the test
// unmapped already).
func (r *fuseRig) mapFor(t *testing.T, img Image, opts MapOptions) Device {
	t.Helper()
	dev, err := r.mapper(t).Map(ctxT(t, 60*time.Second), img, opts)
	if err != nil {
		t.Fatalf("Map(%s): %v", img.Spec(), err)
	}
	t.Cleanup(func() {
		if err := r.mapper(t).Unmap(context.Background(), dev); err != nil {
			t.Errorf("cleanup Unmap(%s): %v", dev.Path, err)
		}
	})
	return dev
}

// assertNoLeftovers checks that no mount, loop device, rbd-fuse process
// or keyring file of this rig survives.
func (r *fuseRig) assertNoLeftovers(t *testing.T) {
	t.Helper()
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), r.stateDir) {
		t.Errorf("mount left behind under %s:\n%s", r.stateDir, grepLines(string(mounts), r.stateDir))
	}
	out, _ := exec.Command("losetup", "-a").CombinedOutput()
	if strings.Contains(string(out), r.stateDir) {
		t.Errorf("loop device left behind: %s", grepLines(string(out), r.stateDir))
	}
	if pids := rbdFusePids(r.stateDir); len(pids) > 0 {
		t.Errorf("rbd-fuse processes left behind: %v", pids)
	}
	if entries, _ := os.ReadDir(r.secretDir); len(entries) > 0 {
		t.Errorf("keyring files left in %s: %v", r.secretDir, entries)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rbdFusePids finds running rbd-fuse processes whose arguments mention sub.
func rbdFusePids(sub string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		args := procArgs(pid)
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "rbd-fuse") &&
			strings.Contains(strings.Join(args, " "), sub) && procAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// dd runs dd with the given operands.
func dd(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "dd", append(args, "status=none")...).CombinedOutput(); err != nil {
		t.Fatalf("dd %v: %v: %s", args, err, out)
	}
}

// writeRandom writes n MiB of random data to dev with dd and returns its
// sha256.
func writeRandom(t *testing.T, dev string, mib int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "data")
	data := make([]byte, mib<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dd(t, "if="+src, "of="+dev, "bs=1M", "count="+strconv.Itoa(mib), "oflag=direct", "conv=fsync")
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// readSum reads n MiB from dev with dd and returns their sha256.
func readSum(t *testing.T, dev string, mib int) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "readback")
	dd(t, "if="+dev, "of="+dst, "bs=1M", "count="+strconv.Itoa(mib), "iflag=direct")
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestFuseDataSurvivesUnmapAndRemap(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 64))
	ctx := ctxT(t, 2*time.Minute)

	dev, err := rig.mapper(t).Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if !loopDevRe.MatchString(dev.Path) || dev.Mapper != Fuse {
		t.Fatalf("Map returned %+v, want a fuse loop device", dev)
	}
	if got := dev.Attrs[AttrPool] + "/" + dev.Attrs[AttrImage]; got != img.Spec() {
		t.Errorf("Device attrs name %q, want %q", got, img.Spec())
	}
	want := writeRandom(t, dev.Path, 4)
	if err := rig.mapper(t).Unmap(ctx, dev); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	rig.assertNoLeftovers(t)
	if entries, _ := os.ReadDir(filepath.Join(rig.stateDir, "fuse", img.Pool)); len(entries) != 0 {
		t.Errorf("state left under %s/fuse/%s after Unmap: %v", rig.stateDir, img.Pool, entries)
	}

	dev2 := rig.mapFor(t, img, MapOptions{})
	if got := readSum(t, dev2.Path, 4); got != want {
		t.Fatalf("data read back after remap has sha256 %s, want %s", got, want)
	}
}

func TestFuseMapIsIdempotentAcrossRestart(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 32))
	ctx := ctxT(t, 2*time.Minute)

	m := rig.mapper(t)
	dev1, err := m.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("first Map: %v", err)
	}
	dev2, err := m.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("second Map: %v", err)
	}
	// A new Mapper value has no memory of the first: it must find the
	// mapping from the state directory, the mount table and sysfs.
	restarted := rig.mapper(t)
	dev3, err := restarted.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map after simulated restart: %v", err)
	}
	if dev1.Path != dev2.Path || dev1.Path != dev3.Path {
		t.Fatalf("Map returned %s, %s, %s; want the same device each time", dev1.Path, dev2.Path, dev3.Path)
	}
	file := filepath.Join(rig.stateDir, "fuse", img.Pool, img.Name, "mnt", img.Name)
	out, err := exec.Command("losetup", "-j", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -j: %v: %s", err, out)
	}
	if n := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; n != 1 || !strings.HasPrefix(string(out), dev1.Path+":") {
		t.Errorf("losetup -j %s:\n%s\nwant exactly %s", file, out, dev1.Path)
	}
	if pids := rbdFusePids(rig.stateDir); len(pids) != 1 {
		t.Errorf("want one rbd-fuse process, found %v", pids)
	}
	if healthy, msg := restarted.Check(ctx, dev1); !healthy {
		t.Errorf("Check after restart: unhealthy: %s", msg)
	}
	if err := restarted.Unmap(ctx, dev1); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	if err := restarted.Unmap(ctx, dev1); err != nil {
		t.Fatalf("second Unmap (idempotent) failed: %v", err)
	}
	if healthy, _ := restarted.Check(ctx, dev1); healthy {
		t.Error("Check reports an unmapped device healthy")
	}
}

func TestFuseRecoversAfterRBDFuseKilled(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 32))
	ctx := ctxT(t, 2*time.Minute)
	m := rig.mapper(t)

	dev, err := m.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	want := writeRandom(t, dev.Path, 2)
	pids := rbdFusePids(rig.stateDir)
	if len(pids) != 1 {
		t.Fatalf("want one rbd-fuse process, found %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(ctxT(t, 10*time.Second), pids[0]) {
		t.Fatalf("rbd-fuse %d survived SIGKILL", pids[0])
	}
	// Only the dead client watches the image now; evict it so that the
	// image can be removed at the end without waiting for its watch to
	// time out.
	env.blocklistWatchers(t, img.Spec())

	healthy, msg := m.Check(ctx, dev)
	if healthy || !strings.Contains(msg, "died") {
		t.Errorf("Check after kill = %v, %q; want unhealthy saying rbd-fuse died", healthy, msg)
	}
	// Recovery also works from a restarted plugin.
	dev2, err := rig.mapper(t).Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map after rbd-fuse was killed: %v", err)
	}
	t.Cleanup(func() { _ = rig.mapper(t).Unmap(context.Background(), dev2) })
	if got := readSum(t, dev2.Path, 2); got != want {
		t.Fatalf("data after recovery has sha256 %s, want %s", got, want)
	}
	if healthy, msg := m.Check(ctx, dev2); !healthy {
		t.Errorf("Check after recovery: unhealthy: %s", msg)
	}
	if dev2.Path != dev.Path {
		if f := loopBackingFile("/sys", dev.Path); strings.Contains(f, rig.stateDir) {
			t.Errorf("old loop device %s still backs %s after recovery", dev.Path, f)
		}
	}
	if pids := rbdFusePids(rig.stateDir); len(pids) != 1 {
		t.Errorf("want one rbd-fuse process after recovery, found %v", pids)
	}
}

// Check asks rbd-fuse itself (a request its root answers from memory, so
// that a node's health sweep costs the same whatever the pool holds): a
// stopped daemon is reported as not answering, and healthy again once it
// runs.
func TestFuseCheckReportsAStoppedRBDFuse(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	ctx := ctxT(t, 2*time.Minute)
	dev := rig.mapFor(t, img, MapOptions{})
	m := rig.mapper(t)
	if healthy, msg := m.Check(ctx, dev); !healthy {
		t.Fatalf("Check of a fresh mapping: %s", msg)
	}
	pids := rbdFusePids(rig.stateDir)
	if len(pids) != 1 {
		t.Fatalf("want one rbd-fuse process, found %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pids[0], syscall.SIGCONT)
		}
	}
	t.Cleanup(resume) // before the rig unmaps
	healthy, msg := m.Check(ctx, dev)
	if healthy || !strings.Contains(msg, "does not answer") {
		t.Errorf("Check of a stopped rbd-fuse = %v, %q; want unhealthy, saying it does not answer", healthy, msg)
	}
	resume()
	if healthy, msg := m.Check(ctx, dev); !healthy {
		t.Errorf("Check once rbd-fuse runs again: %s", msg)
	}
}

func TestFuseRecoveryWhileOldDeviceStillInUse(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	ctx := ctxT(t, 2*time.Minute)
	m := rig.mapper(t)

	dev, err := m.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	want := writeRandom(t, dev.Path, 1)
	// A filesystem still mounted on the old device (stood in for by an
	// exclusive open) must not stop recovery, nor be handed out again.
	fd, err := syscall.Open(dev.Path, syscall.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Close(fd) }()
	pids := rbdFusePids(rig.stateDir)
	if len(pids) != 1 {
		t.Fatalf("want one rbd-fuse process, found %v", pids)
	}
	_ = syscall.Kill(pids[0], syscall.SIGKILL)
	waitGone(ctxT(t, 10*time.Second), pids[0])
	env.blocklistWatchers(t, img.Spec())

	dev2, err := m.Map(ctx, img, MapOptions{})
	if err != nil {
		t.Fatalf("Map while the old device is in use: %v", err)
	}
	if dev2.Path == dev.Path {
		t.Fatalf("recovery handed out the dead device %s again", dev.Path)
	}
	if got := readSum(t, dev2.Path, 1); got != want {
		t.Errorf("data after recovery has sha256 %s, want %s", got, want)
	}
	if healthy, _ := m.Check(ctx, dev); healthy {
		t.Errorf("Check reports the dead device %s healthy", dev.Path)
	}
	if healthy, msg := m.Check(ctx, dev2); !healthy {
		t.Errorf("Check of the new device: %s", msg)
	}
	// Unmap works even though the old device is still held.
	if err := m.Unmap(ctx, dev2); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	_ = syscall.Close(fd)
	fd = -1
	deadline := time.Now().Add(5 * time.Second)
	for loopBackingFile("/sys", dev.Path) != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if f := loopBackingFile("/sys", dev.Path); f != "" {
		t.Errorf("old device %s still attached to %s after its last user closed it", dev.Path, f)
	}
}

func TestFuseMapsAsRestrictedUser(t *testing.T) {
	env := needCeph(t)
	if _, err := exec.LookPath("ceph"); err != nil {
		t.Skip("skipping: ceph CLI not found")
	}
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	// A user that can only use this pool: if rbd-fuse ignored the user
	// and connected as client.admin, authentication would fail.
	user := "mappertest-" + strconv.Itoa(os.Getpid())
	out, err := env.cli("ceph", "auth", "get-or-create-key", "client."+user,
		"mon", "profile rbd", "osd", "profile rbd pool="+env.pool)
	if err != nil {
		t.Fatalf("creating client.%s: %v: %s", user, err, out)
	}
	t.Cleanup(func() { _, _ = env.cli("ceph", "auth", "rm", "client."+user) })
	img.User, img.Key = user, strings.TrimSpace(out)

	dev := rig.mapFor(t, img, MapOptions{})
	want := writeRandom(t, dev.Path, 1)
	if got := readSum(t, dev.Path, 1); got != want {
		t.Errorf("read back %s, want %s", got, want)
	}
}

func TestFuseKeyNeverInArgvEnvOrFiles(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	logs := captureKlog(t)

	rig.mapFor(t, img, MapOptions{})
	pids := rbdFusePids(rig.stateDir)
	if len(pids) != 1 {
		t.Fatalf("want one rbd-fuse process, found %v", pids)
	}
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pids[0], f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(env.key)) {
			t.Errorf("the key appears in /proc/%d/%s of rbd-fuse", pids[0], f)
		}
		if f == "cmdline" && !bytes.Contains(b, []byte(img.Name)) {
			t.Errorf("/proc/%d/cmdline %q does not name the image: wrong process?", pids[0], b)
		}
	}
	if entries, _ := os.ReadDir(rig.secretDir); len(entries) > 0 {
		t.Errorf("keyring left in %s after Map returned: %v", rig.secretDir, entries)
	}
	// Every state file (not the image file inside the mount) must be
	// free of the key.
	_ = filepath.WalkDir(rig.stateDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() && d.Name() == "mnt" {
			return filepath.SkipDir
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(env.key)) {
			t.Errorf("the key appears in state file %s", path)
		}
		return nil
	})
	if strings.Contains(logs.String(), env.key) {
		t.Error("the key appears in the klog output")
	}
}

func TestFuseUnmapRefusesBusyDevice(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	ctx := ctxT(t, time.Minute)
	dev := rig.mapFor(t, img, MapOptions{})

	// An exclusive open stands in for a mounted filesystem.
	fd, err := syscall.Open(dev.Path, syscall.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = rig.mapper(t).Unmap(ctx, dev)
	_ = syscall.Close(fd)
	if !errors.Is(err, ErrDeviceBusy) {
		t.Fatalf("Unmap of a busy device: %v, want ErrDeviceBusy", err)
	}
	if healthy, msg := rig.mapper(t).Check(ctx, dev); !healthy {
		t.Errorf("refused Unmap damaged the mapping: %s", msg)
	}
	if err := rig.mapper(t).Unmap(ctx, dev); err != nil {
		t.Fatalf("Unmap once idle: %v", err)
	}
}

func TestFuseReadOnlyMapping(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	ctx := ctxT(t, time.Minute)
	dev := rig.mapFor(t, img, MapOptions{ReadOnly: true})

	if ro, known := blockReadOnly("/sys", dev.Path); !known || !ro {
		t.Errorf("%s read-only = %v (known %v), want true", dev.Path, ro, known)
	}
	out, err := exec.Command("dd", "if=/dev/zero", "of="+dev.Path, "bs=4096", "count=1", "oflag=direct", "status=none").CombinedOutput()
	if err == nil {
		t.Errorf("writing to read-only %s succeeded", dev.Path)
	} else {
		t.Logf("write to read-only device refused as expected: %s", strings.TrimSpace(string(out)))
	}
	_, err = rig.mapper(t).Map(ctx, img, MapOptions{ReadOnly: false})
	if !errors.Is(err, ErrMappingConflict) {
		t.Errorf("read-write Map over a read-only mapping: %v, want ErrMappingConflict", err)
	}
}

func TestFuseConcurrentMapsShareOneMapping(t *testing.T) {
	env := needCeph(t)
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 16))
	ctx := ctxT(t, time.Minute)

	var wg sync.WaitGroup
	devs := make([]Device, 3)
	errs := make([]error, 3)
	for i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Mapper values: only the file lock serialises them.
			devs[i], errs[i] = rig.mapper(t).Map(ctx, img, MapOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Map %d: %v", i, err)
		}
	}
	t.Cleanup(func() { _ = rig.mapper(t).Unmap(context.Background(), devs[0]) })
	for _, d := range devs[1:] {
		if d.Path != devs[0].Path {
			t.Errorf("concurrent Maps returned %s and %s", devs[0].Path, d.Path)
		}
	}
	if pids := rbdFusePids(rig.stateDir); len(pids) != 1 {
		t.Errorf("want one rbd-fuse process, found %v", pids)
	}
}

func TestFuseMapFailuresLeaveNothing(t *testing.T) {
	env := needCeph(t)
	existing := env.createImage(t, 16)
	wrongSecret := make([]byte, 16)
	_, _ = rand.Read(wrongSecret)
	tests := []struct {
		name    string
		img     func() Image
		cfg     func(*Config)
		timeout time.Duration
		want    error
	}{
		{
			name: "missing image is ErrImageNotFound",
			img:  func() Image { return env.image("no-such-image-" + strconv.Itoa(os.Getpid())) },
			want: ErrImageNotFound,
		},
		{
			name: "missing pool is ErrImageNotFound",
			img: func() Image {
				img := env.image(existing)
				img.Pool = "no-such-pool"
				return img
			},
			want: ErrImageNotFound,
		},
		{
			name: "wrong key is ErrAccessDenied",
			img: func() Image {
				img := env.image(existing)
				img.Key = makeKey(wrongSecret)
				return img
			},
			want: ErrAccessDenied,
		},
		{
			name: "unreachable monitors end in ErrMapTimeout at the deadline",
			img: func() Image {
				img := env.image(existing)
				img.Monitors = []string{"127.0.0.1:1"}
				return img
			},
			timeout: 6 * time.Second,
			want:    ErrMapTimeout,
		},
		{
			name: "failed loop attach stops the rbd-fuse it started",
			img:  func() Image { return env.image(existing) },
			// no loop-control under DevRoot fails the ioctls, then losetup
			cfg:  func(c *Config) { c.DevRoot, c.LosetupPath = os.TempDir()+"/no-such-dev", "false" },
			want: ErrMapFailed,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newFuseRig(t)
			if tc.cfg != nil {
				tc.cfg(&rig.cfg)
			}
			img := tc.img()
			timeout := tc.timeout
			if timeout == 0 {
				timeout = time.Minute
			}
			start := time.Now()
			_, err := rig.mapper(t).Map(ctxT(t, timeout), img, MapOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Map: %v, want %v", err, tc.want)
			}
			if elapsed := time.Since(start); elapsed > timeout+5*time.Second {
				t.Errorf("Map took %v with a %v deadline", elapsed, timeout)
			}
			if strings.Contains(err.Error(), img.Key) {
				t.Error("the error text contains the key")
			}
		})
	}
}

// The fuse state is kept per pool and image: a running rbd-fuse is reused
// only for the cluster it serves, and without an fsid as before.
func TestFuseKeysItsMappingByClusterFSID(t *testing.T) {
	env := needCeph(t)
	fsid := os.Getenv("CEPH_FSID")
	if fsid == "" {
		t.Skip("CEPH_FSID is unset (e2e/run-tests.sh exports it with the cluster)")
	}
	rig := newFuseRig(t)
	img := env.image(env.createImage(t, 32))
	img.ClusterFSID = fsid
	dev := rig.mapFor(t, img, MapOptions{})
	ctx := ctxT(t, time.Minute)
	tests := []struct {
		name    string
		fsid    string
		wantErr error
	}{
		{"same cluster reuses it", strings.ToUpper(fsid), nil},
		{"fsid unknown reuses it (compatibility)", "", nil},
		{"another cluster with the same names is refused", "0d2a0c1e-0000-4000-8000-000000000001", ErrMappingConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			other := img
			other.ClusterFSID = tc.fsid
			got, err := rig.mapper(t).Map(ctx, other, MapOptions{})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Map = %v, want %v", err, tc.wantErr)
			}
			if err == nil && got.Path != dev.Path {
				t.Fatalf("Map = %s, want the existing %s", got.Path, dev.Path)
			}
			if err != nil && !strings.Contains(err.Error(), "mounter: krbd or rbd-nbd") {
				t.Errorf("the conflict gives no way out: %v", err)
			}
		})
	}
}
