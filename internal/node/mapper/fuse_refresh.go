package mapper

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"
)

var _ Refresher = (*fuse)(nil)

// Refresh implements Refresher: after the image grew, it makes the loop
// device show the image's new size without disturbing the mapping, so a
// filesystem mounted on the device can be grown while it stays mounted.
//
// rbd-fuse itself reports the new size (librbd refreshes the image when
// the resize is announced to watchers), but the kernel caches the file's
// size (FUSE attribute timeout) and the loop device keeps the size it was
// attached with. Refresh therefore asks rbd-fuse for the size past the
// cache (statx with AT_STATX_FORCE_SYNC) and then runs `losetup -c DEV`.
//
// Refresh is idempotent: a device already at the image's size runs no
// command. A mapping that is gone, dead or replaced fails with ErrMapFailed
// (the volume must be staged again), an rbd-fuse that does not answer in
// time with ErrMapTimeout. An image smaller than the device (shrunk behind
// the driver's back) is refused and the device left alone: shrinking a
// device under a filesystem would cut the filesystem off.
func (f *fuse) Refresh(ctx context.Context, dev Device) error {
	ctx, cancel := withDeadline(ctx, f.cfg.DefaultTimeout)
	defer cancel()
	img, p, unlock, err := f.lockDevice(ctx, dev, ErrMapTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	if err := f.checkServes(ctx, img, p, dev.Path); err != nil {
		return err
	}
	return f.growLoop(ctx, img, p, dev.Path)
}

// checkServes fails unless rbd-fuse answers for the image and devPath is
// a live loop device over its file.
func (f *fuse) checkServes(ctx context.Context, img Image, p fusePaths, devPath string) error {
	state, err := f.inspect(ctx, p)
	switch {
	case err != nil:
		return err
	case state == fuseUnresponsive:
		return fmt.Errorf("%w: rbd-fuse for %s does not answer within %s (cluster unreachable?); see %s", ErrMapTimeout, img.Spec(), probeTimeout, p.log)
	case state != fuseAlive:
		return fmt.Errorf("%w: rbd-fuse for %s is not running; the volume must be staged again", ErrMapFailed, img.Spec())
	}
	if got := loopBackingFile(f.cfg.SysfsRoot, devPath); got != p.file || loopDetaching(f.cfg.SysfsRoot, devPath) {
		return fmt.Errorf("%w: %s no longer backs %s (backing file %q, or being detached); the volume must be staged again", ErrMapFailed, devPath, img.Spec(), got)
	}
	return nil
}

// growLoop sets the loop device's size to the image file's current size.
func (f *fuse) growLoop(ctx context.Context, img Image, p fusePaths, devPath string) error {
	fileSize, err := f.probes.freshSize(ctx, p.file, probeTimeout)
	switch {
	case errors.Is(err, errProbeTimeout):
		return fmt.Errorf("%w: rbd-fuse did not report the size of %s in time: %v", ErrMapTimeout, img.Spec(), err)
	case err != nil:
		return fmt.Errorf("%w: reading the size of %s: %v", ErrMapFailed, p.file, err)
	}
	// The loop driver ignores a partial last sector.
	want := fileSize - fileSize%sectorSize
	have, err := blockDeviceSize(f.cfg.SysfsRoot, devPath)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrMapFailed, err)
	case have == want:
		return nil
	case have > want:
		return fmt.Errorf("%w: image %s (%d bytes) is smaller than its device %s (%d bytes); it was shrunk behind the driver's back, the device is left as it is",
			ErrMapFailed, img.Spec(), fileSize, devPath, have)
	}
	if err := refreshLoopCapacity(ctx, f.cfg.Exec, f.cfg.LosetupPath, devPath); err != nil {
		return fmt.Errorf("%w: updating the size of %s (%s): %v", ErrMapFailed, devPath, img.Spec(), err)
	}
	if have, err = blockDeviceSize(f.cfg.SysfsRoot, devPath); err != nil || have != want {
		return fmt.Errorf("%w: %s has %d bytes after `losetup -c`, want %d (%v)", ErrMapFailed, devPath, have, want, err)
	}
	klog.InfoS("fuse: device grown to the image size", "image", img.Spec(), "device", devPath, "bytes", want)
	return nil
}
