package mapper

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMountTableWatchWakesOnAMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	w := watchMountTable("/proc/self/mountinfo")
	defer w.Close()
	woke := make(chan struct{})
	go func() {
		w.wait(time.Hour)
		close(woke)
	}()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("this process may not mount: %v", err)
	}
	defer func() { _ = unix.Unmount(dir, unix.MNT_DETACH) }()
	select {
	case <-woke:
	case <-time.After(time.Minute):
		t.Fatal("the wait did not end when a tmpfs was mounted (it would sleep its whole hour)")
	}
}

func TestMountTableWatchSleepsWhereThereIsNoMountTable(t *testing.T) {
	tests := []struct {
		name, mountinfo string
	}{
		{"a plain file (tests' fake tables)", "plain"},
		{"a missing file", "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "plain"), []byte("1 0 0:1 / / rw - ext4 x rw\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			w := watchMountTable(filepath.Join(dir, tc.mountinfo))
			defer w.Close()
			const d = 30 * time.Millisecond
			start := time.Now()
			w.wait(d)
			if got := time.Since(start); got < d {
				t.Errorf("wait(%v) returned after %v: with no table to watch it must sleep, or callers would spin", d, got)
			}
		})
	}
}
