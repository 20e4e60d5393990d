package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
)

// NodePublishVolume implements csi.NodeServer: bind-mount the staged
// filesystem, or the device of a block volume, at the target path.
func (d *nodeService) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := checkPublish(req); err != nil {
		return nil, err
	}
	unlock, err := d.lockNodeVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadState(req.GetStagingTargetPath())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if st == nil || st.Device == nil || st.VolumeID != req.GetVolumeId() {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s: call NodeStageVolume first", req.GetVolumeId(), req.GetStagingTargetPath())
	}
	target := req.GetTargetPath()
	block := req.GetVolumeCapability().GetBlock() != nil
	if block != st.Block {
		return nil, invalid("volume %s was staged as block=%v, publish asks block=%v", req.GetVolumeId(), st.Block, block)
	}
	if err := checkSingleWriter(st, req); err != nil {
		return nil, err
	}
	mounted, err := d.mounter.IsMountPoint(target)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "inspect target %s: %v", target, err)
	}
	if !mounted {
		if err := d.bindTarget(ctx, st, req, block); err != nil {
			return nil, err
		}
	}
	if !st.hasTarget(target) {
		st.Targets = append(st.Targets, target)
		if err := st.save(); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func checkPublish(req *csi.NodePublishVolumeRequest) error {
	switch {
	case req.GetVolumeId() == "":
		return invalid("volume_id is required")
	case req.GetStagingTargetPath() == "":
		return invalid("staging_target_path is required: this driver stages volumes")
	case req.GetTargetPath() == "":
		return invalid("target_path is required")
	case req.GetVolumeCapability() == nil:
		return invalid("volume_capability is required")
	}
	if _, err := checkCapability(req.GetVolumeCapability()); err != nil {
		return err
	}
	if m := req.GetVolumeCapability().GetMount(); m != nil {
		if _, err := validateMountFlags(m.GetMountFlags()); err != nil {
			return err
		}
	}
	return nil
}

// checkSingleWriter enforces SINGLE_NODE_SINGLE_WRITER: one published
// target at a time.
func checkSingleWriter(st *stageState, req *csi.NodePublishVolumeRequest) error {
	single := req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	if !single || len(st.Targets) == 0 || st.hasTarget(req.GetTargetPath()) {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "volume %s has access mode SINGLE_NODE_SINGLE_WRITER and is already published at %s", req.GetVolumeId(), st.Targets[0])
}

func (d *nodeService) bindTarget(ctx context.Context, st *stageState, req *csi.NodePublishVolumeRequest, block bool) error {
	target := req.GetTargetPath()
	opts := []string{"bind"}
	if req.GetReadonly() || st.ReadOnly {
		opts = append(opts, "ro")
	}
	source := st.StagingPath
	if block {
		source = st.volumeDevice()
		if err := makeFile(target); err != nil {
			return status.Errorf(codes.Internal, "create block target %s: %v", target, err)
		}
	} else {
		opts = append(opts, req.GetVolumeCapability().GetMount().GetMountFlags()...)
		if err := os.MkdirAll(target, 0o750); err != nil {
			return status.Errorf(codes.Internal, "create target %s: %v", target, err)
		}
	}
	if err := d.mounter.Mount(ctx, source, target, "", opts); err != nil {
		return status.Errorf(codes.Internal, "publish at %s: %v", target, err)
	}
	return nil
}

func makeFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return err
	}
	return f.Close()
}

// NodeUnpublishVolume implements csi.NodeServer.
func (d *nodeService) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	target := req.GetTargetPath()
	if target == "" {
		return nil, invalid("target_path is required")
	}
	unlock, err := d.lockNodeVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := d.mounter.Unmount(ctx, target); err != nil {
		return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove %s: %v", target, err)
	}
	d.forgetTarget(req.GetVolumeId(), target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// forgetTarget drops target from the volume's state, found via the index.
func (d *nodeService) forgetTarget(volumeID, target string) {
	staging, ok := d.index.get(volumeID)
	if !ok {
		return
	}
	st, err := loadState(staging)
	if err != nil || st == nil {
		return
	}
	if i := slices.Index(st.Targets, target); i >= 0 {
		st.Targets = slices.Delete(st.Targets, i, i+1)
		if err := st.save(); err != nil {
			klog.ErrorS(err, "Could not record unpublish", "volume", volumeID)
		}
	}
}

// NodeGetVolumeStats implements csi.NodeServer, with the volume condition.
func (d *nodeService) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	path := req.GetVolumePath()
	if path == "" {
		return nil, invalid("volume_path is required")
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
	}
	if err != nil {
		return d.statsWithCondition(ctx, req, nil, fmt.Sprintf("volume path %s is unreadable: %v", path, err))
	}
	mounted, err := d.mounter.IsMountPoint(path)
	if err != nil || !mounted {
		return nil, status.Errorf(codes.NotFound, "%s is not a published or staged volume", path)
	}
	usage, err := volumeUsage(path, fi)
	if err != nil {
		return d.statsWithCondition(ctx, req, nil, err.Error())
	}
	return d.statsWithCondition(ctx, req, usage, "")
}

func volumeUsage(path string, fi os.FileInfo) ([]*csi.VolumeUsage, error) {
	if !fi.IsDir() {
		size, err := mounter.DeviceSize(path)
		if err != nil {
			return nil, fmt.Errorf("size of block volume %s: %w", path, err)
		}
		return []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}, nil
	}
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(s.Bsize)
	return []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(s.Blocks) * bs, Available: int64(s.Bavail) * bs, Used: int64(s.Blocks-s.Bfree) * bs},
		{Unit: csi.VolumeUsage_INODES, Total: int64(s.Files), Available: int64(s.Ffree), Used: int64(s.Files - s.Ffree)},
	}, nil
}

// statsWithCondition adds the volume condition: abnormal when the stats
// could not be read, the mapping is gone or unhealthy, or a writable
// filesystem was remounted read-only (the kernel does that on I/O errors).
func (d *nodeService) statsWithCondition(ctx context.Context, req *csi.NodeGetVolumeStatsRequest, usage []*csi.VolumeUsage, problem string) (*csi.NodeGetVolumeStatsResponse, error) {
	if problem == "" {
		problem = d.volumeProblem(ctx, req.GetVolumeId(), req.GetStagingTargetPath())
	}
	resp := &csi.NodeGetVolumeStatsResponse{Usage: usage}
	setLegacyVolumeCondition(resp, problem)
	return resp, nil
}

// volumeProblem describes what is wrong with a staged volume, "" if nothing.
func (d *nodeService) volumeProblem(ctx context.Context, volumeID, staging string) string {
	if staging == "" {
		staging, _ = d.index.get(volumeID)
	}
	st, err := loadState(staging)
	if err != nil || st == nil || st.Device == nil {
		return ""
	}
	if m, ok := d.mappers[st.Mapper]; ok {
		if healthy, msg := m.Check(ctx, *st.Device); !healthy {
			return "mapping lost: " + msg + "; unpublish and unstage the volume (restart the pod) to map it again"
		}
	}
	if st.Block || st.ReadOnly || slices.Contains(st.MountFlags, "ro") {
		return "" // read-only by request, not by the kernel's reaction to I/O errors
	}
	if _, opts, err := d.mounter.MountInfo(st.StagingPath); err == nil && slices.Contains(opts, "ro") {
		return "filesystem was remounted read-only, usually after I/O errors: check the device and the kernel log, then restart the pod"
	}
	return ""
}

// NodeExpandVolume implements csi.NodeServer: grow the filesystem online
// after the controller grew the image. Block volumes need nothing.
func (d *nodeService) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if req.GetVolumePath() == "" {
		return nil, invalid("volume_path is required")
	}
	unlock, err := d.lockNodeVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	staging := req.GetStagingTargetPath()
	if staging == "" {
		staging, _ = d.index.get(req.GetVolumeId())
	}
	st, err := loadState(staging)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if st == nil || st.Device == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", req.GetVolumeId())
	}
	if _, err := os.Stat(req.GetVolumePath()); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume path %s: %v", req.GetVolumePath(), err)
	}
	if err := d.refreshDevice(ctx, st); err != nil {
		return nil, err
	}
	size, err := waitDeviceSize(ctx, st.Device.Path, req.GetCapacityRange().GetRequiredBytes())
	if err != nil {
		return nil, explainNotGrown(st.Mapper, err)
	}
	if st.CryptName != "" {
		if err := d.crypt.Resize(ctx, st.CryptName); err != nil {
			return nil, statusOf(err, "grow the encrypted device of volume "+req.GetVolumeId())
		}
	}
	if st.Block || req.GetVolumeCapability().GetBlock() != nil {
		return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
	}
	if err := d.mounter.Resize(ctx, st.volumeDevice(), st.StagingPath); err != nil {
		return nil, statusOf(err, "grow filesystem of volume "+req.GetVolumeId())
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

// deviceGrowWait bounds how long NodeExpandVolume waits for the device to
// show the size the controller gave the image. krbd and rbd-nbd learn of a
// resize from the image header's watch, asynchronously; growing the
// filesystem before then grows nothing (rbd-nbd on Debian's 6.1 kernel,
// make test-kernel).
const deviceGrowWait = 30 * time.Second

// explainNotGrown adds, to a device that did not grow under rbd-nbd, the
// Ceph bug behind it and the way out; other errors (a size that could not
// be read) pass through as they are.
func explainNotGrown(mapperName string, err error) error {
	if mapperName != mapper.RBDNBD || status.Code(err) != codes.Unavailable {
		return err
	}
	return status.Errorf(codes.Unavailable, "%s; rbd-nbd releases without the fix for https://tracker.ceph.com/issues/64139 (Pacific's among them) never resize a device mapped over netlink: the volume gets its new size when it is staged again (restart the pod)", status.Convert(err).Message())
}

// waitDeviceSize returns the device's size once it is at least want (any
// size when want is 0), or Unavailable, which the caller retries.
func waitDeviceSize(ctx context.Context, dev string, want int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, deviceGrowWait)
	defer cancel()
	for {
		size, err := mounter.DeviceSize(dev)
		if err != nil {
			return 0, status.Errorf(codes.Internal, "size of %s: %v", dev, err)
		}
		if size >= want {
			return size, nil
		}
		select {
		case <-ctx.Done():
			return 0, status.Errorf(codes.Unavailable, "device %s is still %d bytes but the volume was expanded to %d: the mapper has not picked up the new image size yet; retry", dev, size, want)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refresher is implemented by mappers whose device does not follow an
// image resize by itself (a loop device keeps its size until told).
type refresher interface {
	Refresh(ctx context.Context, dev mapper.Device) error
}

func (d *nodeService) refreshDevice(ctx context.Context, st *stageState) error {
	r, ok := d.mappers[st.Mapper].(refresher)
	if !ok {
		return nil
	}
	if err := r.Refresh(ctx, *st.Device); err != nil {
		return statusOf(err, "pick up the new size of "+st.Device.Path)
	}
	return nil
}
