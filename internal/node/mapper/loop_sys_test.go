package mapper

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// loopFile makes a 4 MiB backing file with a recognisable first sector,
// skipping where loop devices cannot be attached.
func loopFile(t *testing.T, tag string) (string, []byte) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("attaching loop devices needs root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop driver here: %v", err)
	}
	head := bytes.Repeat([]byte(tag), 512/len(tag))
	p := filepath.Join(t.TempDir(), tag+".img")
	if err := os.WriteFile(p, head, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 4<<20); err != nil {
		t.Fatal(err)
	}
	return p, head
}

func detachLoopAtCleanup(t *testing.T, dev string) {
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
}

func loopSysfs(t *testing.T, dev, attr string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), attr))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestAttachLoopSysSetsUpWhatLosetupWould(t *testing.T) {
	tests := []struct {
		name     string
		readOnly bool
	}{
		{"read-write", false},
		{"read-only", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file, head := loopFile(t, "rw"+fmt.Sprint(tc.readOnly))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dev, err := attachLoopSys(ctx, "/dev", file, tc.readOnly)
			if err != nil {
				t.Fatalf("attachLoopSys: %v", err)
			}
			detachLoopAtCleanup(t, dev)
			if !loopDevRe.MatchString(dev) {
				t.Fatalf("device %q is no /dev/loopN", dev)
			}
			// losetup, given the same file and options, is the reference.
			args := []string{"-f", "--show", "--direct-io=on"}
			if tc.readOnly {
				args = append(args, "--read-only")
			}
			out, err := exec.Command("losetup", append(args, file)...).Output()
			if err != nil {
				t.Skipf("losetup for the reference failed: %v", err)
			}
			ref := strings.TrimSpace(string(out))
			detachLoopAtCleanup(t, ref)
			for _, attr := range []string{"ro", "loop/dio", "loop/autoclear", "loop/partscan", "loop/offset", "size"} {
				if got, want := loopSysfs(t, dev, attr), loopSysfs(t, ref, attr); got != want {
					t.Errorf("%s of %s = %q; losetup's %s has %q", attr, dev, got, ref, want)
				}
			}
			if got := loopBackingFile("/sys", dev); got != file {
				t.Errorf("backing file of %s = %q; want %s", dev, got, file)
			}
			if got, _ := loopsBacking("/sys", file); len(got) != 2 {
				t.Errorf("loopsBacking(%s) = %q; want both devices", file, got)
			}
			read, err := os.ReadFile(dev)
			if err != nil || !bytes.Equal(read[:len(head)], head) {
				t.Errorf("the device does not read back the file's first sector (%v)", err)
			}
		})
	}
}

func TestAttachLoopSysGivesConcurrentAttachesDistinctDevices(t *testing.T) {
	const n = 6
	files := make([]string, n)
	for i := range files {
		files[i], _ = loopFile(t, fmt.Sprintf("c%d", i))
	}
	devs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range files {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			devs[i], errs[i] = attachLoopSys(ctx, "/dev", files[i], false)
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, dev := range devs {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		detachLoopAtCleanup(t, dev)
		if seen[dev] {
			t.Errorf("%s handed out twice", dev)
		}
		seen[dev] = true
		if got := loopBackingFile("/sys", dev); got != files[i] {
			t.Errorf("%s backs %q; want %s", dev, got, files[i])
		}
	}
}

func TestAttachLoopSysRefusesAMissingFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("attaching loop devices needs root")
	}
	missing := filepath.Join(t.TempDir(), "gone")
	dev, err := attachLoopSys(context.Background(), "/dev", missing, false)
	if err == nil {
		detachLoopAtCleanup(t, dev)
		t.Fatalf("attached %s to a missing file", dev)
	}
	if !os.IsNotExist(err) || !strings.Contains(err.Error(), missing) {
		t.Errorf("error = %v; want not-exist naming %s", err, missing)
	}
}
