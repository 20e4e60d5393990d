package mapper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fuseRefreshRig is a fuse mapper over a fake mount table, a fake sysfs
// and a fake losetup: the image file is a plain file whose size the test
// sets, and `losetup -c` copies that size into the fake loop device.
type fuseRefreshRig struct {
	f     *fuse
	exec  *fakeExec
	sysfs string
	file  string
	dev   Device
}

const refreshTestDev = "/dev/loop3"

func newFuseRefreshRig(t *testing.T, fileMiB, devMiB int64) *fuseRefreshRig {
	t.Helper()
	r := &fuseRefreshRig{exec: &fakeExec{}, sysfs: t.TempDir()}
	f, err := newFuse(Config{StateDir: t.TempDir(), SysfsRoot: r.sysfs, Exec: r.exec, LosetupPath: "losetup", DefaultTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.f = f
	p := f.paths("kube", "img")
	r.file = p.file
	mustMkdir(t, p.mnt)
	r.setFileSize(t, fileMiB<<20)
	f.mountinfo = filepath.Join(t.TempDir(), "mountinfo")
	mustWrite(t, f.mountinfo, "90 22 0:50 / "+p.mnt+" rw - fuse.rbd-fuse rbd-fuse rw\n")
	mustWrite(t, r.loopFile("backing_file"), p.file+"\n")
	mustWrite(t, r.loopFile("autoclear"), "0\n")
	r.setDevSize(t, devMiB<<20)
	r.exec.handler = func(c Command) (string, string, error) {
		if c.Path == "losetup" && slices.Equal(c.Args, []string{"-c", refreshTestDev}) {
			st, err := os.Stat(r.file)
			if err != nil {
				return "", err.Error(), err
			}
			return "", "", os.WriteFile(r.blockFile("size"), []byte(strconv.FormatInt(st.Size()/512, 10)+"\n"), 0o644)
		}
		return "", "unexpected command", errors.New("exit status 1")
	}
	r.dev = fuseDevice(Image{Pool: "kube", Name: "img"}, refreshTestDev, false)
	return r
}

func (r *fuseRefreshRig) loopFile(name string) string {
	return filepath.Join(r.sysfs, "block", "loop3", "loop", name)
}

func (r *fuseRefreshRig) blockFile(name string) string {
	return filepath.Join(r.sysfs, "block", "loop3", name)
}

func (r *fuseRefreshRig) setFileSize(t *testing.T, n int64) {
	t.Helper()
	if err := os.WriteFile(r.file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.file, n); err != nil {
		t.Fatal(err)
	}
}

func (r *fuseRefreshRig) setDevSize(t *testing.T, n int64) {
	t.Helper()
	mustWrite(t, r.blockFile("size"), fmt.Sprintf("%d\n", n/512))
}

func (r *fuseRefreshRig) devSize(t *testing.T) int64 {
	t.Helper()
	n, err := blockDeviceSize(r.sysfs, refreshTestDev)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFuseRefreshGrowsTheLoopDeviceOnceAndIsIdempotent(t *testing.T) {
	r := newFuseRefreshRig(t, 128, 64)
	ctx := ctxTimeout(t, 5*time.Second)
	if err := r.f.Refresh(ctx, r.dev); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := r.devSize(t); got != 128<<20 {
		t.Errorf("device size after Refresh = %d, want %d", got, 128<<20)
	}
	if err := r.f.Refresh(ctx, r.dev); err != nil {
		t.Fatalf("second Refresh: %v", err)
	}
	if calls := r.exec.Calls(); len(calls) != 1 {
		t.Errorf("commands run: %v; want exactly one losetup -c (none for an up-to-date device)", calls)
	}
	// A partial last sector is not part of the loop device.
	r.setFileSize(t, 192<<20+100)
	if err := r.f.Refresh(ctx, r.dev); err != nil {
		t.Fatalf("Refresh to an unaligned size: %v", err)
	}
	if got := r.devSize(t); got != 192<<20 {
		t.Errorf("device size = %d, want %d", got, 192<<20)
	}
}

func TestFuseRefreshRefusals(t *testing.T) {
	tests := []struct {
		name      string
		modify    func(t *testing.T, r *fuseRefreshRig)
		want      error
		msg       string
		wantCalls int // losetup runs
	}{
		{"image smaller than device", func(t *testing.T, r *fuseRefreshRig) { r.setFileSize(t, 32<<20) }, ErrMapFailed, "smaller", 0},
		{"rbd-fuse not mounted", func(t *testing.T, r *fuseRefreshRig) { mustWrite(t, r.f.mountinfo, "") }, ErrMapFailed, "staged again", 0},
		{"device backs another file", func(t *testing.T, r *fuseRefreshRig) { mustWrite(t, r.loopFile("backing_file"), "/other\n") }, ErrMapFailed, "no longer backs", 0},
		{"device being detached", func(t *testing.T, r *fuseRefreshRig) { mustWrite(t, r.loopFile("autoclear"), "1\n") }, ErrMapFailed, "no longer backs", 0},
		{"device of another mapper", func(_ *testing.T, r *fuseRefreshRig) { r.dev.Mapper = KRBD }, ErrInvalidDevice, "mapped by", 0},
		{"losetup fails", func(_ *testing.T, r *fuseRefreshRig) {
			r.exec.handler = func(Command) (string, string, error) { return "", "losetup: boom", errors.New("exit status 1") }
		}, ErrMapFailed, "boom", 1},
		{"size unchanged after losetup -c", func(_ *testing.T, r *fuseRefreshRig) {
			r.exec.handler = func(Command) (string, string, error) { return "", "", nil }
		}, ErrMapFailed, "after `losetup -c`", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFuseRefreshRig(t, 128, 64)
			tc.modify(t, r)
			err := r.f.Refresh(ctxTimeout(t, 5*time.Second), r.dev)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Refresh: %v; want %v mentioning %q", err, tc.want, tc.msg)
			}
			if calls := r.exec.Calls(); len(calls) != tc.wantCalls {
				t.Errorf("commands run: %v; want %d", calls, tc.wantCalls)
			}
		})
	}
}

func TestMapperTypesAndRefresher(t *testing.T) {
	for _, name := range Names() {
		m, err := New(name, Config{StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(Refresher); ok != (name == Fuse) {
			t.Errorf("%s implements Refresher = %v; want only fuse to", name, ok)
		}
	}
}
