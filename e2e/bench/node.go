package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
)

// nodePhases times the node path with one mapper: NodeStageVolume+
// NodePublishVolume and NodeUnpublishVolume+NodeUnstageVolume through the
// driver against the same steps done by hand with the same tools (fuse:
// rbd-fuse and losetup --direct-io=on; krbd: rbd map; rbd-nbd: rbd-nbd
// map), mkfs.ext4 with the driver's options, mount, bind mount; then the
// reverse. The driver runs as the chart installs it (attachRequired: the
// volume is attached with ControllerPublishVolume first, untimed, as the
// external-attacher does before the kubelet stages), and once more without
// an attach record (attachRequired: false, static volumes), where the node
// lists the image's clients again after mapping. The sides (three, and a
// fourth for fuse) take turns volume by volume, in an order that reverses
// every round, so that a machine whose speed drifts (the cluster shares
// it) weighs on all alike instead of on whichever ran last. Each side's image is gone before
// the next side starts: the raw side's removal returns when it is done,
// the driver's DeleteVolume hands the purge to the background, so the
// driver sides wait for it, which would otherwise run during the next
// side's timed stage (the controller's phases count that cost).
func (b *bench) nodePhases(n int, mapper string) error {
	work, err := os.MkdirTemp("", "rbd-csi-bench-node")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	keyring, err := b.keyringFile(work)
	if err != nil {
		return err
	}
	// By hand, rbd-fuse runs as the driver runs it, without librbd's cache
	// (a fenced rbd-fuse must fail writes, not take them: see the fuse
	// mapper's conf), which makes mkfs about 3 ms slower than with the
	// cache; that is the safety's cost, not the driver's, so the goal is
	// measured against it. A fourth side keeps rbd-fuse's defaults, for
	// the record.
	conf, err := b.confFile(work, "ceph.conf", mapper == "fuse")
	if err != nil {
		return err
	}
	defaultConf, err := b.confFile(work, "ceph-defaults.conf", false)
	if err != nil {
		return err
	}
	var drvUp, drvDown, bareUp, bareDown, rawUp, rawDown, cachedUp, cachedDown result
	sides := []func(i int) error{
		func(i int) error { return b.driverNodeRun(work, i, mapper, true, &drvUp, &drvDown) },
		func(i int) error { return b.driverNodeRun(work, i, mapper, false, &bareUp, &bareDown) },
		func(i int) error { return b.rawNodeRun(work, conf, keyring, i, mapper, "", &rawUp, &rawDown) },
	}
	names := []string{"driver node path", "driver node path without attach records", "raw node path"}
	if mapper == "fuse" {
		sides = append(sides, func(i int) error {
			return b.rawNodeRun(work, defaultConf, keyring, i, mapper, "cached-", &cachedUp, &cachedDown)
		})
		names = append(names, "raw node path with librbd's cache")
	}
	for i := range n {
		for k := range sides {
			if i%2 == 1 {
				k = len(sides) - 1 - k
			}
			if err := sides[k](i); err != nil {
				return fmt.Errorf("%s: %w", names[k], err)
			}
		}
	}
	b.report("Stage+Publish "+mapper, 1, drvUp.summed(), rawUp.summed(), "by hand "+mapper, 0.9)
	b.report("Unpub+Unstage "+mapper, 1, drvDown.summed(), rawDown.summed(), "by hand "+mapper, 0)
	b.report("Stage+Publish "+mapper+" no record", 1, bareUp.summed(), rawUp.summed(), "by hand "+mapper, 0)
	b.report("Unpub+Unstage "+mapper+" no record", 1, bareDown.summed(), rawDown.summed(), "by hand "+mapper, 0)
	if mapper == "fuse" {
		b.report("Stage+Publish fuse vs cached", 1, drvUp.summed(), cachedUp.summed(), "by hand fuse, rbd_cache on", 0)
	}
	return nil
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// driverVolume is a volume created, staged and published by the driver.
type driverVolume struct {
	vol             *csi.Volume
	staging, target string
	publish         map[string]string // ControllerPublishVolume's publish_context
}

func (b *bench) createVolume(name, work, mapper string) (driverVolume, error) {
	resp, err := b.client.CreateVolume(context.Background(), b.createReqWith(name, 1<<30, mapper))
	if err != nil {
		return driverVolume{}, err
	}
	v := driverVolume{vol: resp.Volume, staging: filepath.Join(work, name+"-staging"), target: filepath.Join(work, name+"-pod")}
	return v, os.MkdirAll(v.staging, 0o750)
}

func (b *bench) stagePublish(v driverVolume) error { return stagePublishWith(b.node, v, b.secrets()) }

func stagePublishWith(node csi.NodeClient, v driverVolume, secrets map[string]string) error {
	capab := mountCapability()
	if _, err := node.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: v.vol.VolumeId, PublishContext: v.publish, StagingTargetPath: v.staging, VolumeCapability: capab, Secrets: secrets, VolumeContext: v.vol.VolumeContext}); err != nil {
		return err
	}
	_, err := node.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: v.vol.VolumeId, PublishContext: v.publish, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: capab, VolumeContext: v.vol.VolumeContext})
	return err
}

// attach is the external-attacher's ControllerPublishVolume: it records
// the attachment and hands the kubelet the publish_context.
func (b *bench) attach(v *driverVolume) error {
	resp, err := b.client.ControllerPublishVolume(context.Background(), &csi.ControllerPublishVolumeRequest{VolumeId: v.vol.VolumeId, NodeId: benchNodeID, VolumeCapability: mountCapability(), Secrets: b.secrets(), VolumeContext: v.vol.VolumeContext})
	if err != nil {
		return fmt.Errorf("ControllerPublishVolume: %w", err)
	}
	v.publish = resp.PublishContext
	return nil
}

func (b *bench) detach(v driverVolume) error {
	_, err := b.client.ControllerUnpublishVolume(context.Background(), &csi.ControllerUnpublishVolumeRequest{VolumeId: v.vol.VolumeId, NodeId: benchNodeID, Secrets: b.secrets()})
	return err
}

func (b *bench) unpublishUnstage(v driverVolume) error {
	if _, err := b.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: v.vol.VolumeId, TargetPath: v.target}); err != nil {
		return err
	}
	_, err := b.node.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: v.vol.VolumeId, StagingTargetPath: v.staging})
	return err
}

func (b *bench) deleteVolume(v driverVolume) error {
	_, err := b.client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: v.vol.VolumeId, Secrets: b.secrets()})
	return err
}

// driverNodeRun creates volume i, stages and publishes it through the
// driver, then unpublishes, unstages and deletes it, adding the two timed
// halves to up and down.
func (b *bench) driverNodeRun(work string, i int, mapper string, attached bool, up, down *result) error {
	v, err := b.createVolume(fmt.Sprintf("bench-node-%s-%v-%d", mapper, attached, i), work, mapper)
	if err != nil {
		return err
	}
	if attached {
		if err := b.attach(&v); err != nil {
			return err
		}
	}
	t := time.Now()
	if err := b.stagePublish(v); err != nil {
		return err
	}
	up.latencies = append(up.latencies, time.Since(t))
	t = time.Now()
	if err := b.unpublishUnstage(v); err != nil {
		return err
	}
	down.latencies = append(down.latencies, time.Since(t))
	if attached {
		if err := b.detach(v); err != nil {
			return err
		}
	}
	if err := b.deleteVolume(v); err != nil {
		return err
	}
	b.waitTrashDrainedOf("csi-", time.Minute)
	return nil
}

// rawNodeRun is driverNodeRun done by hand on an image of its own.
func (b *bench) rawNodeRun(work, conf, keyring string, i int, mapper, variant string, up, down *result) error {
	name := fmt.Sprintf("bench-raw-node-%s%s-%d", variant, mapper, i)
	if err := b.rawImage(name); err != nil {
		return err
	}
	h := handAttach{mapper: mapper, dir: filepath.Join(work, name), conf: conf, keyring: keyring, pool: b.cfg.pool, image: name}
	t := time.Now()
	if err := h.up(); err != nil {
		h.down()
		return err
	}
	up.latencies = append(up.latencies, time.Since(t))
	t = time.Now()
	if err := h.down(); err != nil {
		return err
	}
	down.latencies = append(down.latencies, time.Since(t))
	return rbd.RemoveImage(b.io, name)
}

// confFile writes a ceph.conf for the CLI tools, without librbd's cache
// when noCache.
func (b *bench) confFile(work, name string, noCache bool) (string, error) {
	conf := "[global]\nmon_host = " + b.cfg.monitors + "\n"
	if noCache {
		conf += "rbd_cache = false\n"
	}
	p := filepath.Join(work, name)
	return p, os.WriteFile(p, []byte(conf), 0o600)
}

// keyringFile writes the admin keyring for the CLI tools.
func (b *bench) keyringFile(work string) (string, error) {
	p := filepath.Join(work, "keyring")
	return p, os.WriteFile(p, []byte("[client.admin]\n\tkey = "+b.cfg.key+"\n"), 0o600)
}

// handAttach is the node path done by hand, the baseline of nodePhases.
type handAttach struct {
	mapper                          string
	dir, conf, keyring, pool, image string
	proc                            *exec.Cmd
	dev                             string
}

func (h *handAttach) mnt() string     { return filepath.Join(h.dir, "fuse") }
func (h *handAttach) staging() string { return filepath.Join(h.dir, "staging") }
func (h *handAttach) target() string  { return filepath.Join(h.dir, "pod") }

// cephArgs are the rbd and rbd-nbd arguments naming the cluster and user.
func (h *handAttach) cephArgs() []string {
	return []string{"-c", h.conf, "--id", "admin", "--keyring", h.keyring}
}

func (h *handAttach) up() error {
	for _, d := range []string{h.mnt(), h.staging(), h.target()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	if err := h.attach(); err != nil {
		return err
	}
	if _, err := cmd("mkfs.ext4", "-q", "-F", "-m0", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", h.dev); err != nil {
		return err
	}
	if _, err := cmd("mount", "-t", "ext4", h.dev, h.staging()); err != nil {
		return err
	}
	_, err := cmd("mount", "-o", "bind", h.staging(), h.target())
	return err
}

// attach makes the image a block device (h.dev) the way an operator
// would with the mapper's own tool.
func (h *handAttach) attach() error {
	spec := h.pool + "/" + h.image
	switch h.mapper {
	case "krbd":
		out, err := cmd("rbd", append(h.cephArgs(), "map", spec)...)
		h.dev = strings.TrimSpace(out)
		return err
	case "rbd-nbd":
		out, err := cmd("rbd-nbd", append(h.cephArgs(), "map", spec)...)
		h.dev = strings.TrimSpace(out)
		return err
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
	h.dev = strings.TrimSpace(out)
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
	keep(h.detach())
	return firstErr
}

func (h *handAttach) detach() error {
	if h.dev == "" {
		return nil
	}
	switch h.mapper {
	case "krbd":
		_, err := cmd("rbd", append(h.cephArgs(), "unmap", h.dev)...)
		return err
	case "rbd-nbd":
		_, err := cmd("rbd-nbd", "unmap", h.dev)
		return err
	}
	_, err := cmd("losetup", "-d", h.dev)
	_, uerr := cmd("umount", h.mnt())
	if h.proc != nil {
		uerr = errors.Join(uerr, h.proc.Wait())
	}
	return errors.Join(err, uerr)
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
