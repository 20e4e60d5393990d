package mapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

var loopDevRe = regexp.MustCompile(`^/dev/loop[0-9]+$`)

// loopsBacking lists the loop devices (/dev/loopN) whose backing file is
// file, from /sys/block/loop*/loop/backing_file. Unlike `losetup -j` this
// never stats the file, which could hang on a dead FUSE mount.
//
// Devices with autoclear set are left out: they are being detached
// (`losetup -d` of a device still in use only sets autoclear, and the
// kernel frees it when its last user closes it), so they are nobody's
// mapping any more, e.g. the old device of a recovered rbd-fuse.
func loopsBacking(sysfs, file string) ([]string, error) {
	return loopsOn(sysfs, file, false)
}

// loopsStillOpen lists the loop devices on file that were detached but
// are still open by someone (autoclear set, backing file still bound).
func loopsStillOpen(sysfs, file string) ([]string, error) {
	return loopsOn(sysfs, file, true)
}

// loopsOn lists the loop devices on file that are attached (detaching
// false) or on their way out (detaching true).
func loopsOn(sysfs, file string, detaching bool) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(sysfs, "block", "loop*"))
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, d := range dirs {
		name := filepath.Base(d)
		n, err := strconv.Atoi(strings.TrimPrefix(name, "loop"))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "loop", "backing_file"))
		if err != nil || loopDetaching(sysfs, name) != detaching {
			continue // not attached, or not in the state asked for
		}
		// The kernel appends " (deleted)" when the file was unlinked.
		if strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)") == file {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	devs := make([]string, len(nums))
	for i, n := range nums {
		devs[i] = "/dev/loop" + strconv.Itoa(n)
	}
	return devs, nil
}

// loopBackingFile returns the backing file of /dev/loopN ("" if detached).
func loopBackingFile(sysfs, dev string) string {
	b, err := os.ReadFile(filepath.Join(sysfs, "block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
}

// loopDetaching reports whether loop device dev (loopN or /dev/loopN)
// has autoclear set, i.e. goes away once its last user closes it.
func loopDetaching(sysfs, dev string) bool {
	b, err := os.ReadFile(filepath.Join(sysfs, "block", filepath.Base(dev), "loop", "autoclear"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// attachLoop runs `losetup -f --show --direct-io=on [--read-only] FILE`.
// Direct I/O avoids double caching (page cache over the loop device and
// over the FUSE file) and makes writes reach rbd-fuse in order.
func attachLoop(ctx context.Context, ex Executor, losetup, file string, readOnly bool) (string, error) {
	args := []string{"-f", "--show", "--direct-io=on"}
	if readOnly {
		args = append(args, "--read-only")
	}
	args = append(args, file)
	out, err := runTool(ctx, ex, Command{Path: losetup, Args: args})
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(out)
	if !loopDevRe.MatchString(dev) {
		return "", fmt.Errorf("losetup printed %q, not a loop device", tail(out, 100))
	}
	return dev, nil
}

// detachLoop runs `losetup -d DEV`. A device that is already detached is
// success.
func detachLoop(ctx context.Context, ex Executor, losetup, sysfs, dev string) error {
	_, err := runTool(ctx, ex, Command{Path: losetup, Args: []string{"-d", dev}})
	if err != nil && loopBackingFile(sysfs, dev) == "" {
		return nil
	}
	return err
}

// blockDeviceBusy reports whether a block device is mounted or held open
// exclusively: an O_EXCL open of a block device fails with EBUSY then.
func blockDeviceBusy(dev string) (bool, error) {
	fd, err := syscall.Open(dev, syscall.O_RDONLY|syscall.O_EXCL|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	_ = syscall.Close(fd)
	return false, nil
}

// sectorSize is the unit of /sys/block/<dev>/size.
const sectorSize = 512

// blockDeviceSize returns the size in bytes of block device dev
// (/dev/NAME or NAME) from /sys/block/NAME/size.
func blockDeviceSize(sysfs, dev string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(sysfs, "block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || sectors < 0 {
		return 0, fmt.Errorf("size of %s: unexpected %q", dev, strings.TrimSpace(string(b)))
	}
	return sectors * sectorSize, nil
}

// refreshLoopCapacity runs `losetup -c DEV`: the loop driver re-reads the
// size of the backing file (LOOP_SET_CAPACITY). The device stays attached
// and open; only its size changes.
func refreshLoopCapacity(ctx context.Context, ex Executor, losetup, dev string) error {
	_, err := runTool(ctx, ex, Command{Path: losetup, Args: []string{"-c", dev}})
	return err
}
