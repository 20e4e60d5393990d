package mapper

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests map real images with the real rbd-nbd and kernel nbd driver.
// They run where the nbd module loads (e2e/kernel's guest: this machine's
// own kernel has no modules) and a cluster is given (see needCeph).

func needKernelNBD(t *testing.T) cephEnv {
	t.Helper()
	if _, err := exec.LookPath("rbd-nbd"); err != nil {
		t.Skipf("skipping real-kernel test: rbd-nbd not found (%v)", err)
	}
	if _, err := os.Stat("/sys/module/nbd"); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "modprobe", "nbd").CombinedOutput(); err != nil {
			t.Skipf("skipping real-kernel test: no nbd module here (modprobe nbd: %v: %s); make test-kernel runs it in a guest with Debian's kernel", err, strings.TrimSpace(string(out)))
		}
	}
	return needCeph(t)
}

// recordingExec runs commands on the OS and remembers their first
// arguments.
type recordingExec struct {
	mu   sync.Mutex
	subs []string
}

func (r *recordingExec) Run(ctx context.Context, c Command) ([]byte, []byte, error) {
	r.mu.Lock()
	if len(c.Args) > 0 {
		r.subs = append(r.subs, c.Args[0])
	}
	r.mu.Unlock()
	return OSExecutor{}.Run(ctx, c)
}

func (r *recordingExec) count(sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(slices.DeleteFunc(slices.Clone(r.subs), func(s string) bool { return s != sub }))
}

// What the unit tests' fake sysfs and /proc stand for: after a map, the
// kernel names as the device's server an rbd-nbd process whose command
// line holds the mapping's cookie and image, so a second map and the
// health checks learn the node's mappings without running rbd-nbd
// list-mapped; after the unmaps the devices are reported gone.
func TestRealNBDMapAndCheckReadTheKernelWithoutListing(t *testing.T) {
	e := needKernelNBD(t)
	rec := &recordingExec{}
	m, err := New(RBDNBD, Config{Exec: rec, SecretDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 3*time.Minute)
	var devs []Device
	for _, name := range []string{"nbd-proc-a", "nbd-proc-b"} {
		img := e.image(name)
		e.rbd(t, "create", "--size", "64M", "--image-feature", "layering", img.Spec())
		t.Cleanup(func() { e.removeImage(t, img.Spec()) })
		dev, err := m.Map(ctx, img, MapOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Unmap(context.Background(), dev) })
		devs = append(devs, dev)
	}
	if devs[0].Path == devs[1].Path {
		t.Fatalf("both images mapped at %s: the second map did not see the first", devs[0].Path)
	}
	for _, dev := range devs {
		if ok, msg := m.Check(ctx, dev); !ok {
			t.Fatalf("Check of %s right after its map: unhealthy: %s", dev.Path, msg)
		}
	}
	if got := rec.count("list-mapped"); got != 0 {
		t.Errorf("rbd-nbd list-mapped ran %d times: sysfs and /proc did not identify the mappings", got)
	}
	for _, dev := range devs {
		if err := m.Unmap(ctx, dev); err != nil {
			t.Fatal(err)
		}
	}
	for _, dev := range devs {
		if ok, msg := m.Check(ctx, dev); ok || !strings.Contains(msg, "no longer mapped") {
			t.Errorf("Check of %s after the unmap = %v, %q; want unhealthy, no longer mapped", dev.Path, ok, msg)
		}
	}
}
