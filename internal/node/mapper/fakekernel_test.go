package mapper

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeKernel emulates the kernel rbd driver's sysfs interface in a temp
// tree. add_single_major and remove_single_major (or add/remove) are FIFOs
// served by goroutines, so the mapper under test does real open/write
// syscalls, and a write blocks exactly like a kernel that cannot reach the
// cluster when the "kernel" is not serving.
//
// One difference from the real kernel (checked on Debian's 6.1 by
// TestRealKRBDDeviceExistsWhenTheAddWriteReturns): the kernel's add write
// returns once devices/N exists, a FIFO write as soon as the request is in
// the pipe, before the fake has handled it. Tests that look at the result
// of an add they did not wait for in Map wait with waitWrites.
type fakeKernel struct {
	t       *testing.T
	sysfs   string
	devRoot string
	bus     string
	addPath string
	rmPath  string
	fsid    string

	mu     sync.Mutex
	writes []string // every string written to add/remove, in order
	stop   bool
	wg     sync.WaitGroup
}

type fakeKernelOpts struct {
	supportedFeatures string // "" = file absent (kernel < 4.11)
	legacyOnly        bool   // no *_single_major files
	stallAdd          bool   // do not serve add until serveAdd is called
}

func newFakeKernel(t *testing.T, o fakeKernelOpts) *fakeKernel {
	t.Helper()
	root := t.TempDir()
	k := &fakeKernel{
		t:       t,
		sysfs:   filepath.Join(root, "sys"),
		devRoot: filepath.Join(root, "dev"),
		fsid:    "6bc57004-69bf-4513-b1b7-209960b4bab4",
	}
	k.bus = filepath.Join(k.sysfs, "bus", "rbd")
	for _, d := range []string{filepath.Join(k.bus, "devices"), filepath.Join(k.sysfs, "block"), k.devRoot} {
		mustMkdir(t, d)
	}
	if o.supportedFeatures != "" {
		mustWrite(t, filepath.Join(k.bus, "supported_features"), o.supportedFeatures+"\n")
	}
	add, rm := "add_single_major", "remove_single_major"
	if o.legacyOnly {
		add, rm = "add", "remove"
	}
	k.addPath, k.rmPath = filepath.Join(k.bus, add), filepath.Join(k.bus, rm)
	for _, p := range []string{k.addPath, k.rmPath} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if !o.stallAdd {
		k.serveAdd()
	}
	k.serve(k.rmPath, k.remove)
	t.Cleanup(k.shutdown)
	return k
}

func mustMkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	mustMkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serveAdd starts answering writes to the add file.
func (k *fakeKernel) serveAdd() { k.serve(k.addPath, k.add) }

// serve reads one write per open of the FIFO and handles it.
func (k *fakeKernel) serve(fifo string, handle func(string)) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			f, err := os.OpenFile(fifo, os.O_RDONLY, 0)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(f)
			f.Close()
			k.mu.Lock()
			stop := k.stop
			k.mu.Unlock()
			if stop {
				return
			}
			if len(b) > 0 {
				// Record and handle in one critical section: Writes() then
				// never shows a write whose effects are not in place, nor
				// misses one whose effects are.
				k.mu.Lock()
				k.writes = append(k.writes, string(b))
				handle(string(b))
				k.mu.Unlock()
			}
		}
	}()
}

// shutdown stops the server goroutines: it wakes readers blocked in
// open(2) with an empty write, and releases writers still blocked in
// open(2) on a FIFO nobody served (a stalled add whose mapper gave up).
func (k *fakeKernel) shutdown() {
	k.mu.Lock()
	k.stop = true
	k.mu.Unlock()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	deadline := time.After(5 * time.Second)
	for {
		for _, p := range []string{k.addPath, k.rmPath} {
			// O_NONBLOCK opens never block: they succeed only when the
			// other side is waiting.
			if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
			if f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				time.Sleep(5 * time.Millisecond)
				f.Close()
			}
		}
		select {
		case <-done:
			return
		case <-deadline:
			k.t.Error("fake kernel goroutines did not stop")
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitWrites waits until the kernel has processed n writes (a FIFO write
// returns before the fake processes it) and returns them. Checks that
// expect fewer than n writes pass a short wait.
func (k *fakeKernel) waitWrites(n int, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		w := k.Writes()
		if len(w) >= n || time.Now().After(deadline) {
			return w
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (k *fakeKernel) Writes() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.writes...)
}

// add handles "MONS OPTIONS POOL IMAGE [SNAP]" like the rbd driver: it
// creates devices/<lowest free id>/, block/rbdN/ro and /dev/rbdN.
func (k *fakeKernel) add(req string) {
	f := strings.Fields(req)
	if len(f) < 4 {
		k.t.Errorf("fake kernel: malformed add request with %d fields", len(f))
		return
	}
	opts, pool, image, snap := f[1], f[2], f[3], "-"
	if len(f) > 4 {
		snap = f[4]
	}
	ns, ro := "", "0"
	for _, o := range strings.Split(opts, ",") {
		switch {
		case strings.HasPrefix(o, "_pool_ns="):
			ns = strings.TrimPrefix(o, "_pool_ns=")
		case o == "ro" || o == "read_only":
			ro = "1"
		}
	}
	id := k.freeID()
	k.addDevice(id, pool, ns, image, snap, ro, req)
}

func (k *fakeKernel) freeID() int {
	for id := 0; ; id++ {
		if _, err := os.Stat(filepath.Join(k.bus, "devices", strconv.Itoa(id))); errors.Is(err, os.ErrNotExist) {
			return id
		}
	}
}

// addDevice creates the sysfs and /dev entries of a mapping. config_info
// holds the add string (key included) as in the real kernel, so a mapper
// that read it would be caught by the key-leak assertions.
func (k *fakeKernel) addDevice(id int, pool, ns, image, snap, ro, configInfo string) {
	dir := filepath.Join(k.bus, "devices", strconv.Itoa(id))
	attrs := map[string]string{
		"pool": pool, "pool_ns": ns, "name": image, "current_snap": snap,
		"major": "251", "minor": strconv.Itoa(id * 16), "cluster_fsid": k.fsid,
		"config_info": configInfo,
	}
	for a, v := range attrs {
		k.writeFile(filepath.Join(dir, a), v+"\n")
	}
	k.writeFile(filepath.Join(k.sysfs, "block", "rbd"+strconv.Itoa(id), "ro"), ro+"\n")
	k.writeFile(filepath.Join(k.devRoot, "rbd"+strconv.Itoa(id)), "")
}

// writeFile is mustWrite for the fake's goroutines, where t.Fatal is not
// allowed.
func (k *fakeKernel) writeFile(p, content string) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		k.t.Error(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		k.t.Error(err)
	}
}

// remove handles "N [force]".
func (k *fakeKernel) remove(req string) {
	f := strings.Fields(req)
	if len(f) == 0 {
		return
	}
	id := f[0]
	_ = os.RemoveAll(filepath.Join(k.bus, "devices", id))
	_ = os.RemoveAll(filepath.Join(k.sysfs, "block", "rbd"+id))
	_ = os.Remove(filepath.Join(k.devRoot, "rbd"+id))
}

// fakeKernelLog returns canned kernel log lines and records the calls.
type fakeKernelLog struct {
	mu    sync.Mutex
	lines []string
	err   error
	since []time.Time
}

func (l *fakeKernelLog) Since(_ context.Context, t time.Time) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.since = append(l.since, t)
	return append([]string(nil), l.lines...), l.err
}
