package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
)

// nodePhases times the node path: NodeStageVolume+NodePublishVolume and
// NodeUnpublishVolume+NodeUnstageVolume through the driver (fuse mapper)
// against the same steps done by hand with the same tools: rbd-fuse,
// losetup --direct-io=on, mkfs.ext4 with the driver's options, mount, bind
// mount; then the reverse.
func (b *bench) nodePhases(n int) error {
	drvUp, drvDown, err := b.driverNodeRuns(n)
	if err != nil {
		return fmt.Errorf("driver node path: %w", err)
	}
	rawUp, rawDown, err := b.rawNodeRuns(n)
	if err != nil {
		return fmt.Errorf("raw node path: %w", err)
	}
	report("Stage+Publish", 1, drvUp, rawUp, "by hand")
	report("Unpub+Unstage", 1, drvDown, rawDown, "by hand")
	return nil
}

func (b *bench) driverNodeRuns(n int) (up, down result, err error) {
	up.latencies, down.latencies = make([]time.Duration, n), make([]time.Duration, n)
	work, err := os.MkdirTemp("", "rbd-csi-bench-node")
	if err != nil {
		return up, down, err
	}
	defer os.RemoveAll(work)
	capab := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	for i := range n {
		resp, err := b.client.CreateVolume(context.Background(), b.createReq(fmt.Sprintf("bench-node-%d", i), 1<<30))
		if err != nil {
			return up, down, err
		}
		vol := resp.Volume
		staging, target := filepath.Join(work, fmt.Sprintf("staging-%d", i)), filepath.Join(work, fmt.Sprintf("pod-%d", i))
		if err := os.MkdirAll(staging, 0o750); err != nil {
			return up, down, err
		}
		t := time.Now()
		if _, err := b.node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: capab, Secrets: b.secrets(), VolumeContext: vol.VolumeContext}); err != nil {
			return up, down, err
		}
		if _, err := b.node.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capab, VolumeContext: vol.VolumeContext}); err != nil {
			return up, down, err
		}
		up.latencies[i] = time.Since(t)
		t = time.Now()
		if _, err := b.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target}); err != nil {
			return up, down, err
		}
		if _, err := b.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging}); err != nil {
			return up, down, err
		}
		down.latencies[i] = time.Since(t)
		if _, err := b.client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId, Secrets: b.secrets()}); err != nil {
			return up, down, err
		}
	}
	up.total, down.total = sum(up.latencies), sum(down.latencies)
	return up, down, nil
}

func (b *bench) rawNodeRuns(n int) (up, down result, err error) {
	up.latencies, down.latencies = make([]time.Duration, n), make([]time.Duration, n)
	work, err := os.MkdirTemp("", "rbd-csi-bench-raw")
	if err != nil {
		return up, down, err
	}
	defer os.RemoveAll(work)
	conf := filepath.Join(work, "ceph.conf")
	keyring := filepath.Join(work, "keyring")
	if err := os.WriteFile(conf, []byte("[global]\nmon_host = "+b.cfg.monitors+"\n"), 0o600); err != nil {
		return up, down, err
	}
	if err := os.WriteFile(keyring, []byte("[client.admin]\n\tkey = "+b.cfg.key+"\n"), 0o600); err != nil {
		return up, down, err
	}
	for i := range n {
		name := fmt.Sprintf("bench-raw-node-%d", i)
		opts := rbd.NewRbdImageOptions()
		_ = opts.SetUint64(rbd.ImageOptionFormat, 2)
		_ = opts.SetUint64(rbd.ImageOptionFeatures, rbd.FeatureLayering)
		err := rbd.CreateImage(b.io, name, 1<<30, opts)
		opts.Destroy()
		if err != nil {
			return up, down, err
		}
		h := handAttach{dir: filepath.Join(work, name), conf: conf, keyring: keyring, pool: b.cfg.pool, image: name}
		t := time.Now()
		if err := h.up(); err != nil {
			h.down()
			return up, down, err
		}
		up.latencies[i] = time.Since(t)
		t = time.Now()
		if err := h.down(); err != nil {
			return up, down, err
		}
		down.latencies[i] = time.Since(t)
		if err := rbd.RemoveImage(b.io, name); err != nil {
			return up, down, err
		}
	}
	up.total, down.total = sum(up.latencies), sum(down.latencies)
	return up, down, nil
}

// handAttach is the node path done by hand, the baseline of nodePhases.
type handAttach struct {
	dir, conf, keyring, pool, image string
	proc                            *exec.Cmd
	loop                            string
}

func (h *handAttach) mnt() string     { return filepath.Join(h.dir, "fuse") }
func (h *handAttach) staging() string { return filepath.Join(h.dir, "staging") }
func (h *handAttach) target() string  { return filepath.Join(h.dir, "pod") }

func (h *handAttach) up() error {
	for _, d := range []string{h.mnt(), h.staging(), h.target()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	h.proc = exec.Command("rbd-fuse", "-f", "-c", h.conf, "--poolname="+h.pool, "--image="+h.image, h.mnt())
	h.proc.Env = append(os.Environ(), "CEPH_ARGS=--id admin --keyring "+h.keyring)
	if err := h.proc.Start(); err != nil {
		return err
	}
	file := filepath.Join(h.mnt(), h.image)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(file); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rbd-fuse did not expose %s", file)
		}
		time.Sleep(5 * time.Millisecond)
	}
	out, err := cmd("losetup", "-f", "--show", "--direct-io=on", file)
	if err != nil {
		return err
	}
	h.loop = strings.TrimSpace(out)
	if _, err := cmd("mkfs.ext4", "-q", "-F", "-m0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", h.loop); err != nil {
		return err
	}
	if _, err := cmd("mount", "-t", "ext4", h.loop, h.staging()); err != nil {
		return err
	}
	_, err = cmd("mount", "-o", "bind", h.staging(), h.target())
	return err
}

func (h *handAttach) down() error {
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	_, err := cmd("umount", h.target())
	keep(err)
	_, err = cmd("umount", h.staging())
	keep(err)
	if h.loop != "" {
		_, err = cmd("losetup", "-d", h.loop)
		keep(err)
	}
	_, err = cmd("umount", h.mnt())
	keep(err)
	if h.proc != nil {
		keep(h.proc.Wait())
	}
	return firstErr
}

func cmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}
