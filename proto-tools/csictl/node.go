package main

import (
	"flag"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// nodeVolumeFlags are the flags shared by stage and publish.
type nodeVolumeFlags struct {
	cap        capFlags
	ctx        contextFlags
	publishCtx kvFlag
}

func (n *nodeVolumeFlags) register(fs *flag.FlagSet) {
	n.cap.register(fs, true)
	n.ctx.register(fs)
	n.publishCtx = kvFlag{}
	fs.Var(n.publishCtx, "publish-context", "publish context entry `key=value` from ControllerPublishVolume (repeatable)")
}

// build returns the capability and the merged volume context.
func (n *nodeVolumeFlags) build() (*csi.VolumeCapability, map[string]string, error) {
	vc, err := n.cap.build()
	if err != nil {
		return nil, nil, err
	}
	volCtx, err := n.ctx.build()
	if err != nil {
		return nil, nil, err
	}
	return vc, volCtx, nil
}

// required returns a usage error naming the first empty required flag.
func required(flags ...[2]string) error {
	for _, f := range flags {
		if f[1] == "" {
			return usagef("--%s is required", f[0])
		}
	}
	return nil
}

var stageCmd = &command{
	name:     "stage",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--staging-path PATH [flags]",
	summary:  "stage a volume on this node (NodeStageVolume)",
	details: `Pass the volume context printed by create with --context-file and/or
--context key=value.`,
	bind: bindStage,
}

func bindStage(fs *flag.FlagSet) action {
	var nv nodeVolumeFlags
	var staging string
	fs.StringVar(&staging, "staging-path", "", "global staging `PATH` (required)")
	nv.register(fs)
	return func(e *env, pos []string) error {
		if err := required([2]string{"staging-path", staging}); err != nil {
			return err
		}
		vc, volCtx, err := nv.build()
		if err != nil {
			return err
		}
		req := &csi.NodeStageVolumeRequest{
			VolumeId:          pos[0],
			PublishContext:    nv.publishCtx,
			StagingTargetPath: staging,
			VolumeCapability:  vc,
			VolumeContext:     volCtx,
		}
		return runStage(e, req)
	}
}

func runStage(e *env, req *csi.NodeStageVolumeRequest) error {
	var err error
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "NodeStageVolume", e.node().NodeStageVolume, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		t.line("staged volume %s at %s", req.GetVolumeId(), req.GetStagingTargetPath())
	})
}

var publishCmd = &command{
	name:     "publish",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--staging-path PATH --target-path PATH [flags]",
	summary:  "publish a staged volume at a target path (NodePublishVolume)",
	bind:     bindPublish,
}

func bindPublish(fs *flag.FlagSet) action {
	var nv nodeVolumeFlags
	var staging, target string
	var readonly bool
	fs.StringVar(&staging, "staging-path", "", "staging `PATH` used by stage (required)")
	fs.StringVar(&target, "target-path", "", "target `PATH` to publish at (required)")
	fs.BoolVar(&readonly, "readonly", false, "publish read-only")
	nv.register(fs)
	return func(e *env, pos []string) error {
		if err := required([2]string{"staging-path", staging}, [2]string{"target-path", target}); err != nil {
			return err
		}
		vc, volCtx, err := nv.build()
		if err != nil {
			return err
		}
		req := &csi.NodePublishVolumeRequest{
			VolumeId:          pos[0],
			PublishContext:    nv.publishCtx,
			StagingTargetPath: staging,
			TargetPath:        target,
			VolumeCapability:  vc,
			Readonly:          readonly,
			VolumeContext:     volCtx,
		}
		return runPublish(e, req)
	}
}

func runPublish(e *env, req *csi.NodePublishVolumeRequest) error {
	var err error
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "NodePublishVolume", e.node().NodePublishVolume, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		t.line("published volume %s at %s", req.GetVolumeId(), req.GetTargetPath())
	})
}

var unpublishCmd = &command{
	name:     "unpublish",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--target-path PATH",
	summary:  "unpublish a volume from a target path (NodeUnpublishVolume)",
	bind:     bindUnpublish,
}

func bindUnpublish(fs *flag.FlagSet) action {
	var target string
	fs.StringVar(&target, "target-path", "", "target `PATH` given to publish (required)")
	return func(e *env, pos []string) error {
		if err := required([2]string{"target-path", target}); err != nil {
			return err
		}
		req := &csi.NodeUnpublishVolumeRequest{VolumeId: pos[0], TargetPath: target}
		resp, err := invoke(e, "NodeUnpublishVolume", e.node().NodeUnpublishVolume, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { t.line("unpublished volume %s from %s", pos[0], target) })
	}
}

var unstageCmd = &command{
	name:     "unstage",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--staging-path PATH",
	summary:  "unstage a volume from this node (NodeUnstageVolume)",
	bind:     bindUnstage,
}

func bindUnstage(fs *flag.FlagSet) action {
	var staging string
	fs.StringVar(&staging, "staging-path", "", "staging `PATH` given to stage (required)")
	return func(e *env, pos []string) error {
		if err := required([2]string{"staging-path", staging}); err != nil {
			return err
		}
		req := &csi.NodeUnstageVolumeRequest{VolumeId: pos[0], StagingTargetPath: staging}
		resp, err := invoke(e, "NodeUnstageVolume", e.node().NodeUnstageVolume, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { t.line("unstaged volume %s from %s", pos[0], staging) })
	}
}

var nodeExpandCmd = &command{
	name:     "node-expand",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--path PATH [flags]",
	summary:  "grow the filesystem or device on this node (NodeExpandVolume)",
	details: `A volume capability is sent only when --block, --fs-type or --access-mode
is given.`,
	bind: bindNodeExpand,
}

func bindNodeExpand(fs *flag.FlagSet) action {
	var path, staging string
	var size sizeFlag
	var vc capFlags
	fs.StringVar(&path, "path", "", "volume `PATH` where the volume is published (required)")
	fs.StringVar(&staging, "staging-path", "", "staging `PATH` of the volume")
	fs.Var(&size, "size", "new capacity `SIZE`: plain bytes or Ki, Mi, Gi, Ti (optional)")
	vc.register(fs, false)
	return func(e *env, pos []string) error {
		if err := required([2]string{"path", path}); err != nil {
			return err
		}
		capability, err := optionalCapability(fs, &vc)
		if err != nil {
			return err
		}
		req := &csi.NodeExpandVolumeRequest{VolumeId: pos[0], VolumePath: path, StagingTargetPath: staging, VolumeCapability: capability}
		if size != 0 {
			req.CapacityRange = &csi.CapacityRange{RequiredBytes: int64(size)}
		}
		return runNodeExpand(e, req)
	}
}

func runNodeExpand(e *env, req *csi.NodeExpandVolumeRequest) error {
	var err error
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "NodeExpandVolume", e.node().NodeExpandVolume, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) { t.field("capacity_bytes", resp.GetCapacityBytes()) })
}

var statsCmd = &command{
	name:     "stats",
	group:    "node",
	args:     []string{"VOLUME_ID"},
	synopsis: "--path PATH [--staging-path PATH]",
	summary:  "show volume usage (NodeGetVolumeStats)",
	bind:     bindStats,
}

func bindStats(fs *flag.FlagSet) action {
	var path, staging string
	fs.StringVar(&path, "path", "", "volume `PATH` where the volume is published (required)")
	fs.StringVar(&staging, "staging-path", "", "staging `PATH` of the volume")
	return func(e *env, pos []string) error {
		if err := required([2]string{"path", path}); err != nil {
			return err
		}
		req := &csi.NodeGetVolumeStatsRequest{VolumeId: pos[0], VolumePath: path, StagingTargetPath: staging}
		resp, err := invoke(e, "NodeGetVolumeStats", e.node().NodeGetVolumeStats, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { printUsage(t, resp.GetUsage()) })
	}
}

// printUsage renders volume usage entries as a table.
func printUsage(t *textOut, usage []*csi.VolumeUsage) {
	rows := make([][]string, 0, len(usage))
	for _, u := range usage {
		rows = append(rows, []string{
			u.GetUnit().String(),
			strconv.FormatInt(u.GetTotal(), 10),
			strconv.FormatInt(u.GetUsed(), 10),
			strconv.FormatInt(u.GetAvailable(), 10),
		})
	}
	t.table([]string{"UNIT", "TOTAL", "USED", "AVAILABLE"}, rows)
}

var nodeInfoCmd = &command{
	name:    "node-info",
	group:   "node",
	summary: "show node ID, volume limit and topology (NodeGetInfo)",
	bind:    func(*flag.FlagSet) action { return runNodeInfo },
}

func runNodeInfo(e *env, _ []string) error {
	resp, err := invoke(e, "NodeGetInfo", e.node().NodeGetInfo, &csi.NodeGetInfoRequest{})
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		t.field("node_id", resp.GetNodeId())
		t.field("max_volumes_per_node", resp.GetMaxVolumesPerNode())
		t.kvs("accessible_topology", resp.GetAccessibleTopology().GetSegments())
	})
}

var nodeCapsCmd = &command{
	name:    "node-caps",
	group:   "node",
	summary: "list node capabilities (NodeGetCapabilities)",
	bind:    func(*flag.FlagSet) action { return runNodeCaps },
}

func runNodeCaps(e *env, _ []string) error {
	resp, err := invoke(e, "NodeGetCapabilities", e.node().NodeGetCapabilities, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	return emitCaps(e, resp, resp.GetCapabilities(), func(c *csi.NodeServiceCapability) string { return c.GetRpc().GetType().String() })
}
