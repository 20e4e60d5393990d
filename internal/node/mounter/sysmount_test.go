package mounter

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSysMountArgsTakesOnlyTheDriversOwnOptions(t *testing.T) {
	tests := []struct {
		name      string
		opts      []string
		wantFlags uintptr
		wantData  string
		wantOK    bool
	}{
		{"no options", nil, 0, "", true},
		{"read-only filesystem", []string{"ro"}, unix.MS_RDONLY, "", true},
		{"read-write is the default", []string{"rw"}, 0, "", true},
		{"read-only bind", []string{"bind", "ro"}, unix.MS_BIND | unix.MS_RDONLY, "", true},
		{"xfs nouuid goes to the filesystem", []string{"nouuid", "ro"}, unix.MS_RDONLY, "nouuid", true},
		{"a user option sends the whole mount to mount(8)", []string{"ro", "noatime"}, 0, "", false},
		{"a mount(8)-only option sends it there", []string{"bind", "x-mount.mkdir"}, 0, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flags, data, ok := sysMountArgs(tc.opts)
			if ok != tc.wantOK || (ok && (flags != tc.wantFlags || data != tc.wantData)) {
				t.Fatalf("sysMountArgs(%q) = %#x, %q, %v; want %#x, %q, %v", tc.opts, flags, data, ok, tc.wantFlags, tc.wantData, tc.wantOK)
			}
		})
	}
}

// bindDirs makes a source directory holding one file and an empty target,
// skipping where this process may not mount.
func bindDirs(t *testing.T) (src, dst string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	src, dst = t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return src, dst
}

// optionsAt returns the per-mount options of the mount at target.
func optionsAt(t *testing.T, target string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == target {
			return strings.Split(f[5], ",")
		}
	}
	return nil
}

func TestMountBindsReadOnlyAndUnmountIsIdempotent(t *testing.T) {
	tests := []struct {
		name     string
		opts     []string
		wantOpts []string
	}{
		{"read-only bind with mount(2)", []string{"bind", "ro"}, []string{"ro"}},
		{"read-write bind with mount(2)", []string{"bind"}, []string{"rw"}},
		{"a user option through mount(8)", []string{"bind", "ro", "noexec"}, []string{"ro", "noexec"}},
	}
	r := New(time.Minute)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := bindDirs(t)
			if err := r.Mount(ctxT(t), src, dst, "", tc.opts); err != nil {
				if errors.Is(err, syscall.EPERM) {
					t.Skipf("this process may not mount: %v", err)
				}
				t.Fatalf("Mount: %v", err)
			}
			t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
			got := optionsAt(t, dst)
			for _, o := range tc.wantOpts {
				if !strings.Contains(","+strings.Join(got, ",")+",", ","+o+",") {
					t.Errorf("mount options at %s = %q; want %q among them", dst, got, o)
				}
			}
			if _, err := os.Stat(filepath.Join(dst, "f")); err != nil {
				t.Errorf("the source's file is not seen through the bind: %v", err)
			}
			err := os.WriteFile(filepath.Join(dst, "g"), nil, 0o600)
			if readOnly := errors.Is(err, syscall.EROFS); readOnly != (tc.wantOpts[0] == "ro") {
				t.Errorf("write through the bind: %v; want it refused exactly when mounted ro", err)
			}
			for i := range 2 {
				if err := r.Unmount(ctxT(t), dst); err != nil {
					t.Fatalf("Unmount #%d: %v", i+1, err)
				}
			}
			if optionsAt(t, dst) != nil {
				t.Errorf("%s is still mounted after Unmount", dst)
			}
		})
	}
}

func TestMountFailureReportsMount8sAccount(t *testing.T) {
	_, dst := bindDirs(t)
	missing := filepath.Join(t.TempDir(), "no-such-device")
	err := New(time.Minute).Mount(ctxT(t), missing, dst, "ext4", nil)
	if err == nil {
		_ = unix.Unmount(dst, unix.MNT_DETACH)
		t.Fatal("Mount of a missing device succeeded")
	}
	// mount(8) names the device it could not find; mount(2)'s bare ENOENT
	// would not tell which path was missing.
	if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "mount") {
		t.Errorf("Mount error = %v; want mount(8)'s message naming %s", err, missing)
	}
}

func TestUnmountOfABusyMountSaysWhatHoldsIt(t *testing.T) {
	src, dst := bindDirs(t)
	r := New(time.Minute)
	if err := r.Mount(ctxT(t), src, dst, "", []string{"bind"}); err != nil {
		t.Skipf("this process may not mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
	f, err := os.Open(filepath.Join(dst, "f"))
	if err != nil {
		t.Fatal(err)
	}
	err = r.Unmount(ctxT(t), dst)
	_ = f.Close()
	if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "fuser -vm "+dst) {
		t.Fatalf("Unmount with a file open under it = %v; want EBUSY naming how to find the holder", err)
	}
	if err := r.Unmount(ctxT(t), dst); err != nil {
		t.Fatalf("Unmount once the file is closed: %v", err)
	}
}
