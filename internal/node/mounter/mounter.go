// Package mounter formats, mounts, unmounts and grows filesystems for the
// node plugin. Unlike k8s.io/mount-utils' Mounter, every command here runs
// under a context deadline, so a stuck device can never hang an RPC forever;
// mount-utils is still used to read the mount table.
package mounter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
	mountutils "k8s.io/mount-utils"
)

// Interface is what the node service needs; Fake implements it for tests.
type Interface interface {
	// FormatAndMount mounts dev at target with fstype, first creating the
	// filesystem when, and only when, the device holds none. An existing
	// filesystem smaller than the device (the volume was expanded while
	// not staged, or restored from a smaller snapshot) is grown to fill it.
	// blank says the caller knows every byte of SignatureRegions reads as
	// zero (nothing was ever written there), so that the device holds no
	// filesystem and need not be probed.
	FormatAndMount(ctx context.Context, dev, target, fstype string, opts []string, blank bool) error
	// Mount runs mount(8); opts may include "bind" and "ro".
	Mount(ctx context.Context, source, target, fstype string, opts []string) error
	// Unmount unmounts target; an unmounted target is success.
	Unmount(ctx context.Context, target string) error
	// IsMountPoint reports whether target is a mount point.
	IsMountPoint(target string) (bool, error)
	// MountInfo returns the source device and options of the mount at target.
	MountInfo(target string) (source string, opts []string, err error)
	// Resize grows the filesystem on dev (mounted at mountPath) to the device size.
	Resize(ctx context.Context, dev, mountPath string) error
	// Format returns the filesystem type found on dev ("" when none).
	Format(ctx context.Context, dev string) (string, error)
}

// ErrWrongFilesystem reports a device holding something other than the
// filesystem asked for; it is never reformatted.
var ErrWrongFilesystem = errors.New("device holds another filesystem")

// ErrUnreadable reports a device whose start could not be read: blkid
// found nothing on it, which it also says when its reads fail, so it is
// neither formatted nor mounted.
var ErrUnreadable = errors.New("device cannot be read")

// ErrOnlineResizeDenied reports that the kernel refused to grow a mounted
// filesystem for lack of privilege; growing it at the next stage works.
var ErrOnlineResizeDenied = errors.New("online resize not permitted")

// Real runs the system tools.
type Real struct {
	// Timeout bounds each command whose context has no earlier deadline.
	Timeout time.Duration
	table   mountutils.Interface
}

// New returns a Real mounter.
func New(timeout time.Duration) *Real {
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	return &Real{Timeout: timeout, table: mountutils.New("")}
}

func (r *Real) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	klog.V(4).InfoS("ran command", "cmd", name+" "+strings.Join(args, " "), "duration", time.Since(start), "err", err)
	if ctx.Err() != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// mkfsArgs keep mkfs fast on thin RBD images: no discard pass over the whole
// device, and ext4's inode tables and journal initialised lazily after mount.
// -q: nothing reads the report, and mke2fs took 1 to 3 ms longer writing it
// (errors still go to stderr).
var mkfsArgs = map[string][]string{
	"ext4": {"-q", "-F", "-m0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"},
	"xfs":  {"-q", "-f", "-K"},
}

// FormatAndMount implements Interface.
func (r *Real) FormatAndMount(ctx context.Context, dev, target, fstype string, opts []string, blank bool) error {
	args, ok := mkfsArgs[fstype]
	if !ok {
		return fmt.Errorf("filesystem %q is not supported (ext4, xfs)", fstype)
	}
	found := ""
	if !blank {
		var err error
		if found, err = r.Format(ctx, dev); err != nil {
			return err
		}
	}
	switch found {
	case "":
		if _, err := r.run(ctx, "mkfs."+fstype, append(args, dev)...); err != nil {
			return fmt.Errorf("format %s as %s: %w", dev, fstype, err)
		}
		return r.Mount(ctx, dev, target, fstype, opts)
	case fstype:
		return r.growAndMount(ctx, dev, target, fstype, opts)
	default:
		return fmt.Errorf("%w: %s holds %q, the volume asks for %q; it is left untouched (reformatting would destroy its data)", ErrWrongFilesystem, dev, found, fstype)
	}
}

// growAndMount mounts an existing filesystem, grown first when it is
// smaller than its device. ext4 is grown before mounting: an offline
// resize2fs needs no privilege beyond the device, where an online one needs
// CAP_SYS_RESOURCE, which some sandboxes withhold. xfs can only grow
// mounted, so it grows after. An unchanged volume costs one superblock read.
func (r *Real) growAndMount(ctx context.Context, dev, target, fstype string, opts []string) error {
	grow, err := r.smallerThanDevice(ctx, dev, fstype)
	if err != nil {
		return err
	}
	if grow && fstype == "ext4" {
		if err := r.growExtOffline(ctx, dev); err != nil {
			return err
		}
	}
	if err := r.Mount(ctx, dev, target, fstype, opts); err != nil {
		return err
	}
	if grow && fstype == "xfs" && !slices.Contains(opts, "ro") {
		if _, err := r.run(ctx, "xfs_growfs", "-d", target); err != nil {
			return fmt.Errorf("grow xfs on %s: %w", dev, err)
		}
	}
	return nil
}

// smallerThanDevice reports whether the filesystem on dev leaves at least
// a MiB of the device unused: less is not worth a forced fsck or a grow.
func (r *Real) smallerThanDevice(ctx context.Context, dev, fstype string) (bool, error) {
	sb := make([]byte, superblockRead)
	if err := readAtCtx(ctx, dev, sb, 0); err != nil {
		return false, fmt.Errorf("read the superblock of %s: %w", dev, err)
	}
	var fsBytes int64
	var err error
	switch fstype {
	case "ext4":
		fsBytes, err = parseExtSize(sb[extSuperblockOffset:])
	case "xfs":
		fsBytes, err = parseXFSSize(sb)
	default:
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s on %s: %w", fstype, dev, err)
	}
	devBytes, err := DeviceSize(dev)
	if err != nil {
		return false, fmt.Errorf("size of %s: %w", dev, err)
	}
	return devBytes-fsBytes >= 1<<20, nil
}

// growExtOffline grows an unmounted ext filesystem to its device, after the
// forced check resize2fs insists on.
func (r *Real) growExtOffline(ctx context.Context, dev string) error {
	// e2fsck -p exits 1 when it corrected something, which is fine here.
	if _, err := r.run(ctx, "e2fsck", "-f", "-p", dev); err != nil && exitCode(err) != 1 {
		return fmt.Errorf("check %s before growing it: %w", dev, err)
	}
	if _, err := r.run(ctx, "resize2fs", dev); err != nil {
		return fmt.Errorf("grow ext4 on %s: %w", dev, err)
	}
	return nil
}

// superblockRead covers the xfs superblock (sector 0) and the ext one
// (1024 bytes in).
const superblockRead = extSuperblockOffset + extSuperblockSize

// parseXFSSize reads the data section size from an xfs superblock
// (big-endian sb_blocksize and sb_dblocks after the "XFSB" magic).
func parseXFSSize(sb []byte) (int64, error) {
	be := binary.BigEndian
	if len(sb) < 16 || string(sb[:4]) != "XFSB" {
		return 0, errors.New("no xfs superblock")
	}
	bs, blocks := uint64(be.Uint32(sb[4:])), be.Uint64(sb[8:])
	if bs < 512 || bs > 65536 || blocks == 0 || blocks > 1<<50/bs {
		return 0, fmt.Errorf("xfs superblock names an impossible size (%d blocks of %d bytes)", blocks, bs)
	}
	return int64(blocks * bs), nil
}

// Offsets into the ext superblock (struct ext4_super_block).
const (
	extSuperblockOffset = 1024
	extSuperblockSize   = 1024
	extBlocksCountLo    = 0x04
	extLogBlockSize     = 0x18
	extMagic            = 0x38
	extFeatureIncompat  = 0x60
	extBlocksCountHi    = 0x150
	extMagicValue       = 0xEF53
	extIncompat64Bit    = 0x80
)

func parseExtSize(sb []byte) (int64, error) {
	le := binary.LittleEndian
	if len(sb) < extSuperblockSize || le.Uint16(sb[extMagic:]) != extMagicValue {
		return 0, errors.New("no ext2/3/4 superblock")
	}
	logSize := le.Uint32(sb[extLogBlockSize:])
	if logSize > 6 { // block sizes run from 1 KiB to 64 KiB
		return 0, fmt.Errorf("ext superblock names an impossible block size (log %d)", logSize)
	}
	count := uint64(le.Uint32(sb[extBlocksCountLo:]))
	if le.Uint32(sb[extFeatureIncompat:])&extIncompat64Bit != 0 {
		count |= uint64(le.Uint32(sb[extBlocksCountHi:])) << 32
	}
	if count == 0 || count > 1<<47 {
		return 0, fmt.Errorf("ext superblock names an impossible block count %d", count)
	}
	return int64(count) << (10 + logSize), nil
}

// readAtCtx reads len(buf) bytes at off from path, giving up at the
// context's deadline: a read from a hung device must not hang the RPC (the
// goroutine stays behind until the kernel returns).
func readAtCtx(ctx context.Context, path string, buf []byte, off int64) error {
	done := make(chan error, 1)
	tmp := make([]byte, len(buf))
	go func() {
		f, err := os.Open(path)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = f.ReadAt(tmp, off)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			copy(buf, tmp)
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DeviceSize returns the size of a block device (or file) in bytes.
func DeviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

func exitCode(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	return -1
}

// Format implements Interface using blkid, which exits 2 when it finds
// nothing on the device, and also when it could not read it: "nothing" is
// believed only once the device's start reads back, or a volume whose
// mapping fails its reads (a fenced client, a transient error) would be
// formatted over its data.
func (r *Real) Format(ctx context.Context, dev string) (string, error) {
	out, err := r.run(ctx, "blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		if _, err := ReadStart(ctx, dev, probeBytes); err != nil {
			return "", fmt.Errorf("%w: blkid found nothing on %s, but reading it failed (%v); it was neither formatted nor mounted", ErrUnreadable, dev, err)
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", dev, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "TYPE="); ok {
			return v, nil
		}
		if v, ok := strings.CutPrefix(line, "PTTYPE="); ok {
			return "partition table " + v, nil
		}
	}
	return "unknown", nil
}

// signatureBytes is how far from each end of a device SignatureRegions
// reach: well beyond what blkid reads (its farthest probes are about
// 4.3 MiB from the start, for ZFS labels, and 1.5 MiB from the end, for
// UDF anchors and RAID metadata).
const signatureBytes = 16 << 20

// SignatureRegions are the parts of a device of size bytes that blkid
// reads to find a filesystem, partition table, LUKS header or RAID member:
// a device that reads zeros there holds none of them.
func SignatureRegions(size uint64) [][2]uint64 {
	if size <= 2*signatureBytes {
		return [][2]uint64{{0, size}}
	}
	return [][2]uint64{{0, signatureBytes}, {size - signatureBytes, signatureBytes}}
}

// probeBytes covers where every filesystem and LUKS header blkid knows
// starts (xfs and LUKS at 0, ext4 at 1 KiB, btrfs at 64 KiB).
const probeBytes = 128 << 10

// ReadStart returns the first n bytes of dev (fewer when it is smaller),
// bounded by ctx: a read blocked in the kernel (a fenced or hung mapping)
// is abandoned, its goroutine ending with the read.
func ReadStart(ctx context.Context, dev string, n int) ([]byte, error) {
	type result struct {
		head []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		f, err := os.Open(dev)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		buf := make([]byte, n)
		got, err := io.ReadFull(f, buf)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = nil // a device smaller than n was read whole
		}
		done <- result{buf[:got], err}
	}()
	select {
	case r := <-done:
		return r.head, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Mount implements Interface: with mount(2) when the options allow it
// (sysmount.go), else, and after any failure of mount(2), with mount(8),
// whose account of a failure operators know (and which may succeed where
// the plain call did not, resolving what the call took as given).
func (r *Real) Mount(ctx context.Context, source, target, fstype string, opts []string) error {
	sctx, cancel := context.WithTimeout(ctx, r.Timeout)
	err := sysMount(sctx, source, target, fstype, opts)
	cancel()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// the kernel still holds the call: mount(8) would only queue behind it
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	args := []string{}
	if fstype != "" {
		args = append(args, "-t", fstype)
	}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	args = append(args, "--", source, target)
	if _, err := r.run(ctx, "mount", args...); err != nil {
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	return nil
}

// Unmount implements Interface.
func (r *Real) Unmount(ctx context.Context, target string) error {
	mounted, err := r.IsMountPoint(target)
	if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	if err := sysUnmount(ctx, target); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// IsMountPoint implements Interface. A target whose FUSE or device backend
// died (ENOTCONN, EIO) still counts as mounted so it gets unmounted.
func (r *Real) IsMountPoint(target string) (bool, error) {
	_, err := os.Stat(target)
	if err != nil && (errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.EIO)) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return r.table.IsMountPoint(target)
}

// MountInfo implements Interface.
func (r *Real) MountInfo(target string) (string, []string, error) {
	mps, err := r.table.List()
	if err != nil {
		return "", nil, err
	}
	var found *mountutils.MountPoint
	for i := range mps {
		if mps[i].Path == target {
			found = &mps[i] // the last one is the visible one
		}
	}
	if found == nil {
		return "", nil, fmt.Errorf("%s is not mounted", target)
	}
	return found.Device, found.Opts, nil
}

// Resize implements Interface.
func (r *Real) Resize(ctx context.Context, dev, mountPath string) error {
	fs, err := r.Format(ctx, dev)
	if err != nil {
		return err
	}
	switch fs {
	case "ext4", "ext3", "ext2":
		_, err = r.run(ctx, "resize2fs", dev)
		if err != nil && strings.Contains(err.Error(), "Permission denied") {
			return fmt.Errorf("%w: growing mounted ext4 on %s needs CAP_SYS_RESOURCE, which this node plugin does not have (check the container's capabilities); "+
				"the filesystem is grown when the volume is next staged, so restarting the pod completes the expansion: %v", ErrOnlineResizeDenied, dev, err)
		}
	case "xfs":
		_, err = r.run(ctx, "xfs_growfs", "-d", mountPath)
	default:
		return fmt.Errorf("cannot grow filesystem %q on %s", fs, dev)
	}
	if err != nil {
		return fmt.Errorf("grow %s on %s: %w", fs, dev, err)
	}
	return nil
}
