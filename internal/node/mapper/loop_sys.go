package mapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rbd-csi/rbd-csi/internal/node/blockingcall"
	"golang.org/x/sys/unix"
)

// A loop device is attached with the loop driver's own ioctls, as losetup
// does, without losetup's process start and its scan of every loop device:
// about 8 of the 9 ms a stage spent on it (make bench). losetup stays the
// fallback, for kernels without LOOP_CONFIGURE (before 5.8) and for any
// failure here, since its message is the one operators know.

// errLoopRace is a free loop device taken by someone else between
// LOOP_CTL_GET_FREE and LOOP_CONFIGURE.
var errLoopRace = errors.New("the free loop device was taken meanwhile")

// loopAttachTries bounds the retries after errLoopRace: each one means
// another attach succeeded, so a few always suffice.
const loopAttachTries = 8

// attachLoopSys attaches file to a free loop device under devRoot, with
// direct I/O and read-only as attachLoop asks of losetup, and returns the
// device as /dev/loopN. Given up at ctx's end, the attach may still
// complete; ensureLoop's lookup of the devices backing the file finds it
// on the retry.
func attachLoopSys(ctx context.Context, devRoot, file string, readOnly bool) (dev string, err error) {
	err = blockingcall.Run(ctx, func() error {
		for range loopAttachTries {
			var attachErr error
			dev, attachErr = attachFreeLoop(devRoot, file, readOnly)
			if !errors.Is(attachErr, errLoopRace) {
				return attachErr
			}
		}
		return errLoopRace
	})
	return dev, err
}

// attachFreeLoop makes one attempt: the kernel's first free loop device,
// configured in one ioctl so that no one sees it half set up.
func attachFreeLoop(devRoot, file string, readOnly bool) (string, error) {
	mode, flags := unix.O_RDWR, uint32(unix.LO_FLAGS_DIRECT_IO)
	if readOnly {
		mode, flags = unix.O_RDONLY, flags|unix.LO_FLAGS_READ_ONLY
	}
	backing, err := unix.Open(file, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: file, Err: err}
	}
	defer unix.Close(backing)
	n, err := freeLoop(devRoot)
	if err != nil {
		return "", err
	}
	name := "loop" + strconv.Itoa(n)
	loopFD, err := unix.Open(filepath.Join(devRoot, name), mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: filepath.Join(devRoot, name), Err: err}
	}
	defer unix.Close(loopFD)
	cfg := unix.LoopConfig{Fd: uint32(backing), Info: unix.LoopInfo64{Flags: flags}}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], file)
	switch err := unix.IoctlLoopConfigure(loopFD, &cfg); {
	case errors.Is(err, unix.EBUSY):
		return "", errLoopRace
	case err != nil:
		return "", fmt.Errorf("LOOP_CONFIGURE of /dev/%s: %w", name, err)
	}
	return "/dev/" + name, nil
}

// freeLoop asks the loop driver for a free device number, adding a device
// when none is free.
func freeLoop(devRoot string) (int, error) {
	ctl, err := unix.Open(filepath.Join(devRoot, "loop-control"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: filepath.Join(devRoot, "loop-control"), Err: err}
	}
	defer unix.Close(ctl)
	n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	return n, nil
}
