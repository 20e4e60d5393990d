package mounter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/node/blockingcall"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// The mounts every stage and publish makes (a filesystem with the
// driver's own options, a bind mount of it) are made with mount(2)
// directly: mount(8) is a process start, about 5 ms of a stage's 160
// (measured by make bench), for a call the kernel answers in well under
// one. Options from the user (StorageClass mountOptions) still go to
// mount(8), which alone knows which of them are the kernel's flags, which
// are the filesystem's and which are its own (nofail, _netdev, x-*), so
// that they mean what they mean on any Linux.

// sysMountable says which of the options the driver itself sets mount(2)
// takes, and as what: flags, or the filesystem's data string.
var sysMountable = map[string]struct {
	flag uintptr
	data bool
}{
	"ro":     {flag: unix.MS_RDONLY},
	"rw":     {},
	"bind":   {flag: unix.MS_BIND},
	"nouuid": {data: true}, // xfs: fsDefaults in the driver
}

// sysMountArgs turns opts into mount(2)'s flags and data when every
// option is one sysMountable knows; ok is false otherwise.
func sysMountArgs(opts []string) (flags uintptr, data string, ok bool) {
	var fsOpts []string
	for _, o := range opts {
		m, known := sysMountable[o]
		if !known {
			return 0, "", false
		}
		flags |= m.flag
		if m.data {
			fsOpts = append(fsOpts, o)
		}
	}
	return flags, strings.Join(fsOpts, ","), true
}

// errNotSysMountable sends a mount to mount(8).
var errNotSysMountable = errors.New("options need mount(8)")

// sysMount mounts with mount(2) what sysMountArgs accepts, under ctx's
// deadline (a mount blocked on its device is abandoned, its goroutine
// ending with the call). A read-only bind mount is two calls, as mount(8)
// makes it: the kernel ignores MS_RDONLY on the first; if the second
// fails, the bind is undone.
func sysMount(ctx context.Context, source, target, fstype string, opts []string) error {
	flags, data, ok := sysMountArgs(opts)
	if !ok {
		return errNotSysMountable
	}
	if flags&unix.MS_BIND != 0 {
		fstype = ""
	}
	return blockingcall.Run(ctx, func() error {
		start := time.Now()
		err := unix.Mount(source, target, fstype, flags, data)
		if err == nil && flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
			if err = unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
				_ = unix.Unmount(target, 0)
			}
		}
		klog.V(4).InfoS("mount(2)", "source", source, "target", target, "fstype", fstype, "options", strings.Join(opts, ","), "duration", time.Since(start), "err", err)
		return err
	})
}

// sysUnmount unmounts target with umount(2); a target that is no longer a
// mount point (EINVAL: unmounted meanwhile) is success, as for Unmount.
func sysUnmount(ctx context.Context, target string) error {
	return blockingcall.Run(ctx, func() error {
		start := time.Now()
		err := unix.Unmount(target, 0)
		klog.V(4).InfoS("umount(2)", "target", target, "duration", time.Since(start), "err", err)
		switch {
		case errors.Is(err, unix.EINVAL):
			return nil
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("%w: a process still has a file or its working directory under it, or something is mounted beneath it (fuser -vm %s shows who)", err, target)
		}
		return err
	})
}
