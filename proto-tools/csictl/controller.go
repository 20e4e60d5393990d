package main

import (
	"flag"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

var createCmd = &command{
	name:     "create",
	group:    "controller",
	args:     []string{"NAME"},
	synopsis: "--size SIZE [flags]",
	summary:  "create a volume (CreateVolume); prints volume_id, capacity_bytes, volume_context",
	details: `NAME is the idempotency name of the volume. The volume capability is built from
--block/--fs-type/--mount-flag/--access-mode.

With --output json only the created volume is printed, as an object with
volume_id, capacity_bytes (a string, as protojson encodes int64),
volume_context, content_source and accessible_topology. Saved to a file it
can be given to the node commands as --context-file.`,
	bind: bindCreate,
}

// createOpts holds the flags of "create".
type createOpts struct {
	size        sizeFlag
	limit       limitFlag
	cap         capFlags
	params      kvFlag
	srcVolume   string
	srcSnapshot string
}

func bindCreate(fs *flag.FlagSet) action {
	o := &createOpts{params: kvFlag{}}
	fs.Var(&o.size, "size", "requested capacity `SIZE` (required): plain bytes or Ki, Mi, Gi, Ti, e.g. 1Gi")
	fs.Var(&o.limit, "limit", "also send a capacity limit: --limit makes it equal to --size, --limit=SIZE sets it")
	o.cap.register(fs, true)
	fs.Var(o.params, "param", "StorageClass-style parameter `key=value` (repeatable)")
	fs.StringVar(&o.srcVolume, "source-volume", "", "clone the volume from this volume `ID`")
	fs.StringVar(&o.srcSnapshot, "source-snapshot", "", "restore the volume from this snapshot `ID`")
	return o.run
}

// request builds the CreateVolumeRequest without secrets.
func (o *createOpts) request(name string) (*csi.CreateVolumeRequest, error) {
	if o.size == 0 {
		return nil, usagef("--size is required")
	}
	capRange := &csi.CapacityRange{RequiredBytes: int64(o.size)}
	if o.limit.set {
		capRange.LimitBytes = int64(o.size)
		if o.limit.bytes != 0 {
			capRange.LimitBytes = o.limit.bytes
		}
		if capRange.LimitBytes < capRange.RequiredBytes {
			return nil, usagef("--limit (%d bytes) is smaller than --size (%d bytes)", capRange.LimitBytes, capRange.RequiredBytes)
		}
	}
	vc, err := o.cap.build()
	if err != nil {
		return nil, err
	}
	src, err := contentSource(o.srcVolume, o.srcSnapshot)
	if err != nil {
		return nil, err
	}
	return &csi.CreateVolumeRequest{
		Name:                name,
		CapacityRange:       capRange,
		VolumeCapabilities:  []*csi.VolumeCapability{vc},
		Parameters:          o.params,
		VolumeContentSource: src,
	}, nil
}

// contentSource builds the optional clone or restore source.
func contentSource(volumeID, snapshotID string) (*csi.VolumeContentSource, error) {
	switch {
	case volumeID != "" && snapshotID != "":
		return nil, usagef("--source-volume and --source-snapshot are mutually exclusive")
	case volumeID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: volumeID},
		}}, nil
	case snapshotID != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapshotID},
		}}, nil
	}
	return nil, nil
}

func (o *createOpts) run(e *env, pos []string) error {
	req, err := o.request(pos[0])
	if err != nil {
		return err
	}
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "CreateVolume", e.controller().CreateVolume, req)
	if err != nil {
		return err
	}
	vol := resp.GetVolume()
	if vol == nil {
		vol = &csi.Volume{}
	}
	return e.emit(vol, func(t *textOut) { printVolume(t, vol) })
}

// printVolume renders a created volume.
func printVolume(t *textOut, v *csi.Volume) {
	t.field("volume_id", v.GetVolumeId())
	t.field("capacity_bytes", v.GetCapacityBytes())
	t.kvs("volume_context", v.GetVolumeContext())
	if src := v.GetContentSource(); src != nil {
		t.field("content_source", describeSource(src))
	}
	for _, topo := range v.GetAccessibleTopology() {
		t.kvs("accessible_topology", topo.GetSegments())
	}
}

// describeSource renders a volume content source as "snapshot ID" or
// "volume ID".
func describeSource(src *csi.VolumeContentSource) string {
	if s := src.GetSnapshot(); s != nil {
		return "snapshot " + s.GetSnapshotId()
	}
	if v := src.GetVolume(); v != nil {
		return "volume " + v.GetVolumeId()
	}
	return src.String()
}

var deleteCmd = &command{
	name:    "delete",
	group:   "controller",
	args:    []string{"VOLUME_ID"},
	summary: "delete a volume (DeleteVolume)",
	bind:    func(*flag.FlagSet) action { return runDelete },
}

func runDelete(e *env, pos []string) error {
	sec, err := e.loadSecrets()
	if err != nil {
		return err
	}
	req := &csi.DeleteVolumeRequest{VolumeId: pos[0], Secrets: sec}
	resp, err := invoke(e, "DeleteVolume", e.controller().DeleteVolume, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) { t.line("deleted volume %s", pos[0]) })
}

var expandCmd = &command{
	name:     "expand",
	group:    "controller",
	args:     []string{"VOLUME_ID"},
	synopsis: "--size SIZE [flags]",
	summary:  "grow a volume (ControllerExpandVolume)",
	details: `A volume capability is sent only when --block, --fs-type or --access-mode
is given.`,
	bind: bindExpand,
}

func bindExpand(fs *flag.FlagSet) action {
	var size sizeFlag
	var vc capFlags
	fs.Var(&size, "size", "new capacity `SIZE` (required): plain bytes or Ki, Mi, Gi, Ti, e.g. 2Gi")
	vc.register(fs, false)
	return func(e *env, pos []string) error {
		if size == 0 {
			return usagef("--size is required")
		}
		capability, err := optionalCapability(fs, &vc)
		if err != nil {
			return err
		}
		req := &csi.ControllerExpandVolumeRequest{
			VolumeId:         pos[0],
			CapacityRange:    &csi.CapacityRange{RequiredBytes: int64(size)},
			VolumeCapability: capability,
		}
		return runExpand(e, req)
	}
}

func runExpand(e *env, req *csi.ControllerExpandVolumeRequest) error {
	var err error
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "ControllerExpandVolume", e.controller().ControllerExpandVolume, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		t.field("capacity_bytes", resp.GetCapacityBytes())
		t.field("node_expansion_required", resp.GetNodeExpansionRequired())
	})
}

// optionalCapability builds a capability only if one of its flags was set.
func optionalCapability(fs *flag.FlagSet, vc *capFlags) (*csi.VolumeCapability, error) {
	for _, name := range []string{"block", "fs-type", "access-mode", "mount-flag"} {
		if isSet(fs, name) {
			return vc.build()
		}
	}
	return nil, nil
}

var listCmd = &command{
	name:     "list",
	group:    "controller",
	synopsis: "[--max N] [--token T]",
	summary:  "list volumes (ListVolumes)",
	bind:     bindList,
}

func bindList(fs *flag.FlagSet) action {
	var maxEntries maxEntriesFlag
	var token string
	fs.Var(&maxEntries, "max", "maximum number of entries `N` (0: plugin default)")
	fs.StringVar(&token, "token", "", "starting token from a previous page's next_token")
	return func(e *env, _ []string) error {
		req := &csi.ListVolumesRequest{MaxEntries: int32(maxEntries), StartingToken: token}
		resp, err := invoke(e, "ListVolumes", e.controller().ListVolumes, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { printVolumeList(t, resp) })
	}
}

// printVolumeList renders ListVolumes as a table.
func printVolumeList(t *textOut, resp *csi.ListVolumesResponse) {
	rows := make([][]string, 0, len(resp.GetEntries()))
	for _, en := range resp.GetEntries() {
		rows = append(rows, []string{
			en.GetVolume().GetVolumeId(),
			strconv.FormatInt(en.GetVolume().GetCapacityBytes(), 10),
			orDash(strings.Join(en.GetStatus().GetPublishedNodeIds(), ",")),
		})
	}
	t.table([]string{"VOLUME_ID", "CAPACITY_BYTES", "PUBLISHED_NODES"}, rows)
	if resp.GetNextToken() != "" {
		t.field("next_token", resp.GetNextToken())
	}
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var capacityCmd = &command{
	name:     "capacity",
	group:    "controller",
	synopsis: "[--param key=value ...]",
	summary:  "show available capacity (GetCapacity)",
	bind:     bindCapacity,
}

func bindCapacity(fs *flag.FlagSet) action {
	params := kvFlag{}
	fs.Var(params, "param", "StorageClass-style parameter `key=value` (repeatable)")
	return func(e *env, _ []string) error {
		req := &csi.GetCapacityRequest{Parameters: params}
		resp, err := invoke(e, "GetCapacity", e.controller().GetCapacity, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) {
			t.field("available_capacity", resp.GetAvailableCapacity())
			if resp.GetMaximumVolumeSize() != nil {
				t.field("maximum_volume_size", resp.GetMaximumVolumeSize().GetValue())
			}
			if resp.GetMinimumVolumeSize() != nil {
				t.field("minimum_volume_size", resp.GetMinimumVolumeSize().GetValue())
			}
		})
	}
}

var validateCmd = &command{
	name:     "validate",
	group:    "controller",
	args:     []string{"VOLUME_ID"},
	synopsis: "[flags]",
	summary:  "check a volume capability (ValidateVolumeCapabilities)",
	details: `The capability is built from --block/--fs-type/--mount-flag/--access-mode.
The exit status is 0 whenever the RPC succeeds; read "confirmed" for the answer.`,
	bind: bindValidate,
}

func bindValidate(fs *flag.FlagSet) action {
	var vc capFlags
	var vctx contextFlags
	params := kvFlag{}
	vc.register(fs, true)
	vctx.register(fs)
	fs.Var(params, "param", "parameter `key=value` the volume was created with (repeatable)")
	return func(e *env, pos []string) error {
		capability, err := vc.build()
		if err != nil {
			return err
		}
		volCtx, err := vctx.build()
		if err != nil {
			return err
		}
		req := &csi.ValidateVolumeCapabilitiesRequest{
			VolumeId:           pos[0],
			VolumeContext:      volCtx,
			VolumeCapabilities: []*csi.VolumeCapability{capability},
			Parameters:         params,
		}
		return runValidate(e, req)
	}
}

func runValidate(e *env, req *csi.ValidateVolumeCapabilitiesRequest) error {
	var err error
	if req.Secrets, err = e.loadSecrets(); err != nil {
		return err
	}
	resp, err := invoke(e, "ValidateVolumeCapabilities", e.controller().ValidateVolumeCapabilities, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		t.field("confirmed", resp.GetConfirmed() != nil)
		if resp.GetMessage() != "" {
			t.field("message", resp.GetMessage())
		}
	})
}

var snapshotCmd = &command{
	name:     "snapshot",
	group:    "controller",
	args:     []string{"NAME"},
	synopsis: "--source VOLUME_ID [--param key=value ...]",
	summary:  "snapshot a volume (CreateSnapshot)",
	bind:     bindSnapshot,
}

func bindSnapshot(fs *flag.FlagSet) action {
	var source string
	params := kvFlag{}
	fs.StringVar(&source, "source", "", "`VOLUME_ID` to snapshot (required)")
	fs.Var(params, "param", "VolumeSnapshotClass-style parameter `key=value` (repeatable)")
	return func(e *env, pos []string) error {
		if source == "" {
			return usagef("--source is required")
		}
		sec, err := e.loadSecrets()
		if err != nil {
			return err
		}
		req := &csi.CreateSnapshotRequest{Name: pos[0], SourceVolumeId: source, Parameters: params, Secrets: sec}
		resp, err := invoke(e, "CreateSnapshot", e.controller().CreateSnapshot, req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { printSnapshot(t, resp.GetSnapshot()) })
	}
}

// printSnapshot renders one snapshot.
func printSnapshot(t *textOut, s *csi.Snapshot) {
	t.field("snapshot_id", s.GetSnapshotId())
	t.field("source_volume_id", s.GetSourceVolumeId())
	t.field("size_bytes", s.GetSizeBytes())
	t.field("ready_to_use", s.GetReadyToUse())
	t.field("creation_time", formatTime(s))
	if s.GetGroupSnapshotId() != "" {
		t.field("group_snapshot_id", s.GetGroupSnapshotId())
	}
}

// formatTime renders a snapshot's creation time, or "-" when unset.
func formatTime(s *csi.Snapshot) string {
	if s.GetCreationTime() == nil {
		return "-"
	}
	return s.GetCreationTime().AsTime().UTC().Format(time.RFC3339)
}

var deleteSnapshotCmd = &command{
	name:    "delete-snapshot",
	group:   "controller",
	args:    []string{"SNAPSHOT_ID"},
	summary: "delete a snapshot (DeleteSnapshot)",
	bind:    func(*flag.FlagSet) action { return runDeleteSnapshot },
}

func runDeleteSnapshot(e *env, pos []string) error {
	sec, err := e.loadSecrets()
	if err != nil {
		return err
	}
	req := &csi.DeleteSnapshotRequest{SnapshotId: pos[0], Secrets: sec}
	resp, err := invoke(e, "DeleteSnapshot", e.controller().DeleteSnapshot, req)
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) { t.line("deleted snapshot %s", pos[0]) })
}

var listSnapshotsCmd = &command{
	name:     "list-snapshots",
	group:    "controller",
	synopsis: "[--source VOLUME_ID] [--id SNAPSHOT_ID] [--max N] [--token T]",
	summary:  "list snapshots (ListSnapshots)",
	bind:     bindListSnapshots,
}

func bindListSnapshots(fs *flag.FlagSet) action {
	var req csi.ListSnapshotsRequest
	var maxEntries maxEntriesFlag
	fs.StringVar(&req.SourceVolumeId, "source", "", "only snapshots of this `VOLUME_ID`")
	fs.StringVar(&req.SnapshotId, "id", "", "only the snapshot with this `SNAPSHOT_ID`")
	fs.Var(&maxEntries, "max", "maximum number of entries `N` (0: plugin default)")
	fs.StringVar(&req.StartingToken, "token", "", "starting token from a previous page's next_token")
	return func(e *env, _ []string) error {
		var err error
		req.MaxEntries = int32(maxEntries)
		if req.Secrets, err = e.loadSecrets(); err != nil {
			return err
		}
		resp, err := invoke(e, "ListSnapshots", e.controller().ListSnapshots, &req)
		if err != nil {
			return err
		}
		return e.emit(resp, func(t *textOut) { printSnapshotList(t, resp) })
	}
}

// printSnapshotList renders ListSnapshots as a table.
func printSnapshotList(t *textOut, resp *csi.ListSnapshotsResponse) {
	rows := make([][]string, 0, len(resp.GetEntries()))
	for _, en := range resp.GetEntries() {
		s := en.GetSnapshot()
		rows = append(rows, []string{
			s.GetSnapshotId(), s.GetSourceVolumeId(),
			strconv.FormatInt(s.GetSizeBytes(), 10),
			strconv.FormatBool(s.GetReadyToUse()), formatTime(s),
		})
	}
	t.table([]string{"SNAPSHOT_ID", "SOURCE_VOLUME_ID", "SIZE_BYTES", "READY", "CREATED"}, rows)
	if resp.GetNextToken() != "" {
		t.field("next_token", resp.GetNextToken())
	}
}

var controllerCapsCmd = &command{
	name:    "controller-caps",
	group:   "controller",
	summary: "list controller capabilities (ControllerGetCapabilities)",
	bind:    func(*flag.FlagSet) action { return runControllerCaps },
}

func runControllerCaps(e *env, _ []string) error {
	resp, err := invoke(e, "ControllerGetCapabilities", e.controller().ControllerGetCapabilities, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	return emitCaps(e, resp, resp.GetCapabilities(), func(c *csi.ControllerServiceCapability) string { return c.GetRpc().GetType().String() })
}
