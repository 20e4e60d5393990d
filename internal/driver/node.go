package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/attach"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/failpoint"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// NodeOptions configure the node plugin.
type NodeOptions struct {
	// StateDir holds the volume index and mapper working files.
	StateDir string
	// KeyringDir holds the short-lived keyrings of rbd-nbd and rbd-fuse;
	// leftovers are swept at start (empty: mapper.DefaultKeyringDir).
	KeyringDir string
	// Mapper is the node-wide default mapper (krbd, rbd-nbd, fuse).
	Mapper string
	// NBDReattachTimeout is rbd-nbd's --reattach-timeout unless a
	// StorageClass sets one (0: mapper.DefaultNBDReattachTimeout).
	NBDReattachTimeout time.Duration
	// Mappers overrides the mapper implementations (tests); nil builds the
	// real ones.
	Mappers map[string]mapper.Mapper
	// Mounter overrides the mounter (tests); nil uses the system tools.
	Mounter mounter.Interface
	// Crypt configures cryptsetup for encrypted volumes (tests: a
	// simulated kernel); zero values are the system's, probing devices
	// with the mounter.
	Crypt crypt.Config
}

// nodeService serves csi.NodeServer.
type nodeService struct {
	csi.UnimplementedNodeServer
	*shared
	mappers       map[string]mapper.Mapper
	mounter       mounter.Interface
	crypt         *crypt.Crypt
	index         volumeIndex
	defaultMapper string
}

func newNodeService(sh *shared) (*nodeService, error) {
	n := sh.opts.Node
	if n.StateDir == "" {
		return nil, errors.New("node mode needs a state directory (--state-dir)")
	}
	if n.Mapper == "" {
		n.Mapper = mapper.KRBD
	}
	ns := &nodeService{shared: sh, mappers: n.Mappers, mounter: n.Mounter, index: volumeIndex{dir: filepath.Join(n.StateDir, "volumes")}, defaultMapper: n.Mapper}
	if ns.mounter == nil {
		ns.mounter = mounter.New(0)
	}
	if n.Crypt.Probe == nil {
		n.Crypt.Probe = ns.mounter
	}
	ns.crypt = crypt.New(n.Crypt)
	if ns.mappers == nil {
		if n.KeyringDir == "" {
			n.KeyringDir = mapper.DefaultKeyringDir
		}
		// Before any map: the sweep would take a running call's keyring.
		if err := mapper.PrepareKeyringDir(n.KeyringDir); err != nil {
			return nil, fmt.Errorf("--keyring-dir: %w", err)
		}
		ns.mappers = map[string]mapper.Mapper{}
		for _, name := range mapper.Names() {
			m, err := mapper.New(name, mapper.Config{StateDir: filepath.Join(n.StateDir, "mapper"), SecretDir: n.KeyringDir, NBDReattachTimeout: n.NBDReattachTimeout})
			if err != nil {
				return nil, fmt.Errorf("mapper %s: %w", name, err)
			}
			ns.mappers[name] = m
		}
	}
	if _, ok := ns.mappers[n.Mapper]; !ok {
		return nil, fmt.Errorf("--mapper %q: want one of %s", n.Mapper, strings.Join(mapper.Names(), ", "))
	}
	if err := attach.ValidateNodeID(sh.opts.NodeID); err != nil {
		// Not fatal: without attach (attachRequired false) it worked before.
		klog.InfoS("WARNING: ControllerPublishVolume will refuse this node ID as NotFound; use the Kubernetes node name", "nodeid", sh.opts.NodeID, "reason", err)
	}
	return ns, nil
}

// NodeGetInfo implements csi.NodeServer.
func (d *nodeService) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeGetCapabilities implements csi.NodeServer.
func (d *nodeService) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	types := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		deprecatedVolumeCondition,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	caps := make([]*csi.NodeServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// stageRequest is a validated NodeStageVolume.
type stageRequest struct {
	volumeID, staging string
	block             bool
	fsType            string
	mountFlags        []string
	mode              csi.VolumeCapability_AccessMode_Mode
	who               identity
	creds             ceph.Credentials // who.creds
	ctx               map[string]string
	publish           map[string]string // publish_context
	mapperName        string
	enc               params.Encryption
	kms               kms.KMS // the encrypted volume's KMS, with the node stage secrets' KEK
}

func (d *nodeService) parseStage(req *csi.NodeStageVolumeRequest) (stageRequest, error) {
	r := stageRequest{volumeID: req.GetVolumeId(), staging: req.GetStagingTargetPath(), ctx: req.GetVolumeContext(), publish: req.GetPublishContext()}
	if r.volumeID == "" {
		return r, invalid("volume_id is required")
	}
	if r.staging == "" {
		return r, invalid("staging_target_path is required")
	}
	if req.GetVolumeCapability() == nil {
		return r, invalid("volume_capability is required")
	}
	block, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return r, err
	}
	r.block, r.mode = block, req.GetVolumeCapability().GetAccessMode().GetMode()
	if m := req.GetVolumeCapability().GetMount(); m != nil {
		r.fsType = m.GetFsType()
		if r.fsType == "" {
			r.fsType = "ext4"
		}
		if r.mountFlags, err = validateMountFlags(m.GetMountFlags()); err != nil {
			return r, err
		}
	}
	r.mapperName = d.defaultMapper
	if m := r.ctx[params.KeyMounter]; m != "" {
		r.mapperName = m
	}
	if _, ok := d.mappers[r.mapperName]; !ok {
		return r, invalid("mounter %q: want one of %s", r.mapperName, strings.Join(mapper.Names(), ", "))
	}
	if err := params.ValidateMapOptions(r.ctx[params.KeyMapOptions]); err != nil {
		return r, statusOf(err, "volume context mapOptions")
	}
	if r.enc, err = params.ParseEncryption(r.ctx); err != nil {
		return r, statusOf(err, "volume context")
	}
	if r.enc.Enabled {
		if r.kms, err = d.opts.KMS.Open(r.enc.KMSID, req.GetSecrets(), "node stage secrets"); err != nil {
			return r, statusOf(err, "encrypted volume "+r.volumeID)
		}
	}
	// A key-only node-stage Secret is for the volume context's userId
	// (CreateVolume puts the StorageClass's userId, else adminId, there;
	// static volumes set it in volumeAttributes), else for the user the
	// volume ID records, as in the controller.
	user, hasUser := r.ctx[params.KeyUserID]
	id, _ := volid.Decode(r.volumeID) // a static volume's handle may be anything
	r.who, err = resolveIdentity(req.GetSecrets(), "node stage secrets",
		parameterHint(user, hasUser, "volume context "+params.KeyUserID+" (the StorageClass's "+params.KeyUserID+", else "+params.KeyAdminID+")"), idHint(id))
	r.creds = r.who.creds
	return r, err
}

// validateMountFlags keeps mount options to single option words: they end
// up in one "-o" argument, so a space, a leading dash or a control character
// could not be more than an odd option, but are refused as certain mistakes.
func validateMountFlags(flags []string) ([]string, error) {
	for _, f := range flags {
		if f == "" || strings.HasPrefix(f, "-") || strings.ContainsFunc(f, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, invalid("mount flag %q is not a mount option", f)
		}
	}
	return flags, nil
}

// NodeStageVolume implements csi.NodeServer: map the image, and for mount
// volumes format it if it holds no filesystem and mount it at the staging
// path. A failure undoes what this call did.
func (d *nodeService) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (_ *csi.NodeStageVolumeResponse, err error) {
	var r stageRequest
	defer explainAuth(&err, &r.who)
	r, err = d.parseStage(req)
	if err != nil {
		return nil, err
	}
	unlock, err := d.lockNodeVolume(ctx, r.volumeID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(r.staging); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "staging path %s: %v", r.staging, err)
	}
	st, err := loadState(r.staging)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if st != nil && st.VolumeID != r.volumeID {
		return nil, status.Errorf(codes.FailedPrecondition, "staging path %s holds volume %s", r.staging, st.VolumeID)
	}
	mapped := st != nil && st.Device != nil && d.deviceHealthy(ctx, st)
	if mapped && d.stagingComplete(st) {
		return d.restage(st, r)
	}
	// Not staged, staged half way, or the state outlived the mapping (a
	// node reboot, an unstage that failed after unmounting): stage again
	// rather than trust the state file, or a later publish would bind an
	// empty directory and the pod would write to the node's disk.
	return d.stage(ctx, r, st, mapped)
}

// deviceHealthy reports whether the recorded device still maps the image.
func (d *nodeService) deviceHealthy(ctx context.Context, st *stageState) bool {
	m, ok := d.mappers[st.Mapper]
	if !ok {
		return false
	}
	healthy, _ := m.Check(ctx, *st.Device)
	return healthy
}

// stagingComplete reports whether a mapped volume is fully staged: block
// volumes need nothing more, filesystems must be mounted at the staging
// path.
func (d *nodeService) stagingComplete(st *stageState) bool {
	if st.CryptName != "" && (st.CryptPath == "" || !d.crypt.Active(st.CryptName)) {
		return false
	}
	if st.Block {
		return true
	}
	mounted, err := d.mounter.IsMountPoint(st.StagingPath)
	return st.Mounted && err == nil && mounted
}

// restage answers a repeated NodeStageVolume for a staged volume.
func (d *nodeService) restage(st *stageState, r stageRequest) (*csi.NodeStageVolumeResponse, error) {
	if st.Block != r.block || (!r.block && st.FsType != r.fsType) {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s is staged at %s with another capability (block=%v fsType=%q)", r.volumeID, r.staging, st.Block, st.FsType)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// stage maps the image and mounts it. prevMapped says the previous state's
// device still maps the image on this node: then its watch is our own and
// not a sign of another client.
//
// A previous stage that died before recording its device (the plugin was
// killed while the mapper ran) may have left the image mapped here, and
// that mapping's watch looks like any other client's. Such a stage skips
// the check before the map, lets the mapper adopt what it finds, and
// always runs the check after it, which allows exactly one client: the
// adopted mapping. Otherwise the retry would refuse its own mapping for
// ever.
func (d *nodeService) stage(ctx context.Context, r stageRequest, prev *stageState, prevMapped bool) (resp *csi.NodeStageVolumeResponse, err error) {
	interrupted := prev != nil && prev.Device == nil
	if r.enc.Enabled {
		if err := d.crypt.Check(ctx); err != nil {
			return nil, statusOf(err, "volume "+r.volumeID+" is encrypted")
		}
	}
	ref, err := d.nodeImage(ctx, r.volumeID, r.ctx, r.creds)
	if err != nil {
		return nil, err
	}
	info, inUse, err := d.inspectForStage(ctx, r, ref, !prevMapped && !interrupted)
	if err != nil {
		return nil, err
	}
	defer func() { _ = inUse.wait() }() // no call outlives the RPC
	if _, wrapped := info.Metadata[kms.MetaDEK]; wrapped && !r.enc.Enabled {
		return nil, status.Errorf(codes.FailedPrecondition, "volume image %s is encrypted (it has a wrapped key) but the volume context lacks %s: \"true\" (a static volume sets it in volumeAttributes, with the node stage Secret holding the KEK)", ref, params.KeyEncrypted)
	}
	var dek kms.DEK
	if r.enc.Enabled {
		if dek, err = kms.Unwrapped(ctx, r.kms, info.Metadata, ref.Name); err != nil {
			return nil, statusOf(err, "volume key of "+ref.String())
		}
	}
	st := &stageState{
		VolumeID: r.volumeID, Mapper: r.mapperName, MapOptions: r.ctx[params.KeyMapOptions], Block: r.block, FsType: r.fsType,
		ReadOnly: readOnlyMode(r.mode), AccessMode: r.mode.String(), StagingPath: r.staging, MountFlags: r.mountFlags,
		Image: stageImage{ClusterID: ref.Cluster.ID, Monitors: ref.Cluster.Monitors, Pool: ref.Pool, Namespace: ref.Cluster.RadosNamespace, Name: ref.Name},
	}
	if r.enc.Enabled {
		st.CryptName = crypt.DeviceName(r.volumeID)
	}
	if err := st.save(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.index.put(r.volumeID, r.staging); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	blank := d.startBlankCheck(ctx, r, ref, info, st.ReadOnly)
	m := d.mappers[r.mapperName]
	dev, err := m.Map(ctx, mapperImage(ref, r.creds, info), mapper.MapOptions{ReadOnly: st.ReadOnly, Extra: r.ctx[params.KeyMapOptions], Previous: prevDevice(prev), Proceed: inUse.wait})
	if err != nil {
		// A refusal of the check is the reason, whatever the map made of it.
		refusal := inUse.wait()
		if refusal == nil {
			refusal = statusOf(err, fmt.Sprintf("map %s with %s", ref, r.mapperName))
		}
		d.rollbackMap(st, prev != nil, status.Code(refusal))
		return nil, refusal
	}
	failpoint.Crash("stage-after-map")
	defer func() {
		if err != nil {
			d.rollbackStage(st)
		}
	}()
	// Every mapper asks before it opens the image; should one not have,
	// the mapping it made is undone here all the same.
	if err := inUse.wait(); err != nil {
		return nil, err
	}
	st.Device = &dev
	if err := st.save(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if interrupted || (!prevMapped && !r.hasAttachRecord()) {
		if err := d.checkSoleWriter(ctx, r, ref); err != nil {
			return nil, err
		}
	}
	if err := d.openCrypt(ctx, st, dek, ref); err != nil {
		return nil, err
	}
	if r.block {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	if err := d.mountStaging(ctx, st, r.mountFlags, blank()); err != nil {
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// startBlankCheck asks Ceph, beside the map, whether nothing was ever
// written where a filesystem signature would be: then the device needs no
// probe before mkfs (blkid's reads, each a round trip through the mapping,
// cost about as much as the mkfs). The returned func waits for the answer;
// false (probe) whenever the question does not apply or is not answered.
// Encrypted volumes are left out: what their opened device holds is not
// what the image holds.
func (d *nodeService) startBlankCheck(ctx context.Context, r stageRequest, ref ceph.ImageRef, h ceph.ImageHeader, readOnly bool) func() bool {
	if r.block || r.enc.Enabled || readOnly {
		return func() bool { return false }
	}
	var ranges []ceph.ByteRange
	for _, reg := range mounter.SignatureRegions(h.Size) {
		ranges = append(ranges, ceph.ByteRange{Offset: reg[0], Length: reg[1]})
	}
	answer := make(chan bool, 1)
	go func() {
		blank, err := d.opts.Backend.Unwritten(ctx, r.creds, ref, h, ranges)
		if err != nil {
			klog.V(4).InfoS("Could not tell whether the volume was ever written; its device is probed before mkfs", "volume", r.volumeID, "image", ref.String(), "err", err)
		}
		answer <- blank && err == nil
	}()
	return func() bool { return <-answer }
}

// openCrypt opens the LUKS layer of an encrypted volume (formatting an
// empty image first) and records the opened device.
func (d *nodeService) openCrypt(ctx context.Context, st *stageState, dek kms.DEK, ref ceph.ImageRef) error {
	if st.CryptName == "" {
		return nil
	}
	pass := dek.Passphrase()
	defer clear(pass)
	path, err := d.crypt.Open(ctx, st.Device.Path, st.CryptName, pass, st.ReadOnly)
	if err != nil {
		return statusOf(err, "encrypted volume image "+ref.String())
	}
	st.CryptPath = path
	if err := st.save(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

func prevDevice(prev *stageState) *mapper.Device {
	if prev == nil {
		return nil
	}
	return prev.Device
}

func (d *nodeService) mountStaging(ctx context.Context, st *stageState, flags []string, blank bool) error {
	opts := append(fsDefaults(st.FsType), flags...)
	if st.ReadOnly {
		opts = append(opts, "ro")
	}
	mounted, err := d.mounter.IsMountPoint(st.StagingPath)
	if err != nil {
		return status.Errorf(codes.Internal, "inspect staging path: %v", err)
	}
	if !mounted {
		if err := d.mounter.FormatAndMount(ctx, st.volumeDevice(), st.StagingPath, st.FsType, opts, blank); err != nil {
			return statusOf(err, fmt.Sprintf("format and mount %s at %s", st.volumeDevice(), st.StagingPath))
		}
	}
	st.Mounted = true
	if err := st.save(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

// fsDefaults are mount options every volume of the filesystem gets. xfs
// refuses to mount two filesystems with one UUID, which every restored
// snapshot or clone of a volume has.
func fsDefaults(fs string) []string {
	if fs == "xfs" {
		return []string{"nouuid"}
	}
	return nil
}

// singleWriter says whether a mode lets one node alone write: the modes
// whose stage checks the image's other clients.
func singleWriter(m csi.VolumeCapability_AccessMode_Mode) bool {
	return !readOnlyMode(m) && m != csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
}

func readOnlyMode(m csi.VolumeCapability_AccessMode_Mode) bool {
	return m == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY || m == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}

// rollbackMap cleans up after a failed Map: a refusal created nothing, so
// only a state of this call goes; any other failure gets the full rollback
// (docs/design.md, "Node").
func (d *nodeService) rollbackMap(st *stageState, hadState bool, code codes.Code) {
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied:
		if hadState {
			return
		}
		if err := removeState(st.StagingPath); err != nil {
			klog.ErrorS(err, "Could not drop the state of a refused NodeStageVolume", "volume", st.VolumeID)
			return
		}
		d.index.drop(st.VolumeID)
	default:
		d.rollbackStage(st)
	}
}

// busyRollbackFor bounds how long a rollback retries a device that is
// still busy: udev's probe of a device mapped a moment ago holds it open
// for a few milliseconds, and the kubelet does not unstage a stage that
// failed.
const busyRollbackFor = 10 * time.Second

// rollbackStage undoes a failed stage so that nothing stays mapped or
// mounted; the state file goes only once everything is undone.
func (d *nodeService) rollbackStage(st *stageState) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	err := d.teardownStage(ctx, st)
	giveUp := time.Now().Add(busyRollbackFor)
	for wait := 20 * time.Millisecond; status.Code(err) == codes.FailedPrecondition && time.Now().Before(giveUp); wait = min(2*wait, time.Second) {
		time.Sleep(wait)
		err = d.teardownStage(ctx, st)
	}
	if err != nil {
		klog.ErrorS(err, "Rolling back a failed NodeStageVolume left work for NodeUnstageVolume", "volume", st.VolumeID)
	}
}

// inspectForStage reads the image's header and checks that its attach
// record grants this node, both at once, the record's verdict first. When
// checkUse, it also starts the check that no other client has the image
// open, whose verdict the map waits for before it opens the image
// (MapOptions.Proceed): the check's round trips (librbd opens the image to
// list its watchers, the slowest read of a stage) then overlap the map's
// set-up instead of coming before it.
func (d *nodeService) inspectForStage(ctx context.Context, r stageRequest, ref ceph.ImageRef, checkUse bool) (ceph.ImageHeader, *verdict, error) {
	inUse := startVerdict(nil)
	if checkUse {
		inUse = startVerdict(func() error { return d.checkNotInUse(ctx, r, ref) })
	}
	attached := startVerdict(func() error { return d.checkAttached(ctx, r, ref) })
	h, err := d.opts.Backend.ReadHeader(ctx, r.creds, ref)
	if aerr := attached.wait(); aerr != nil {
		err = aerr
	} else if err != nil {
		err = statusOf(err, "volume image "+ref.String())
	}
	if err != nil {
		_ = inUse.wait() // no call outlives the RPC
		return h, nil, err
	}
	return h, inUse, nil
}

// verdict is the answer of a check running in its own goroutine, waited
// for by whoever needs it first and then kept.
type verdict struct {
	once   sync.Once
	answer chan error
	err    error
}

// startVerdict runs check in a goroutine; a nil check passes at once.
func startVerdict(check func() error) *verdict {
	v := &verdict{answer: make(chan error, 1)}
	if check == nil {
		v.answer <- nil
		return v
	}
	go func() { v.answer <- check() }()
	return v
}

// wait returns the check's answer, waiting for it the first time.
func (v *verdict) wait() error {
	v.once.Do(func() { v.err = <-v.answer })
	return v.err
}

// checkNotInUse refuses to map a single-writer volume that a client
// elsewhere has open: two writers would corrupt the filesystem.
func (d *nodeService) checkNotInUse(ctx context.Context, r stageRequest, ref ceph.ImageRef) error {
	if !singleWriter(r.mode) {
		return nil
	}
	ws, err := d.opts.Backend.Watchers(ctx, r.creds, ref)
	if err != nil {
		return statusOf(err, "list clients of "+ref.String())
	}
	if len(ws) > 0 {
		return status.Errorf(codes.FailedPrecondition, "volume image %s is in use by client %d at %s (another node still has it mapped): unmount it there, or wait for a crashed node's watch to expire (about 30 s); `rbd status %s` shows the client", ref, ws[0].Client, ws[0].Addr, ref)
	}
	return nil
}

// checkSoleWriter is the same check after the map: a single-writer volume
// now mapped read-write here may have no client but this mapping. Two
// nodes that both passed checkNotInUse at the same moment see each other
// here, and both back out (their kubelets retry, and the first to map
// again wins). A stage under an attach record skips it: checkAttached has
// shown the record grants this node alone (and a lost holder is fenced
// before its record is released), so the round trips would prove nothing
// more. It guards what records do not cover (attachRequired: false,
// static volumes).
func (d *nodeService) checkSoleWriter(ctx context.Context, r stageRequest, ref ceph.ImageRef) error {
	if !singleWriter(r.mode) {
		return nil
	}
	ws, err := d.opts.Backend.Watchers(ctx, r.creds, ref)
	if err != nil {
		return statusOf(err, "list clients of "+ref.String()+" after mapping it")
	}
	if len(ws) > 1 {
		return status.Errorf(codes.FailedPrecondition, "volume image %s has %d clients after this node mapped it, one of them at %s: another node mapped it too (at the same moment, or before this node's interrupted stage is retried), so this node unmapped it again; the stage is retried (`rbd status %s` shows the clients)", ref, len(ws), ws[0].Addr, ref)
	}
	return nil
}

// hasAttachRecord says whether the volume was published under an attach
// record (its generation travels in the publish context).
func (r stageRequest) hasAttachRecord() bool {
	_, ok := r.publish[attach.ContextGeneration]
	return ok
}

// checkAttached refuses a stage whose attachment (publish_context) the
// image's record no longer grants this node: a kubelet acting on a
// detach-and-attach elsewhere it has not seen yet. Volumes published
// without records (no publish_context) stage as before.
func (d *nodeService) checkAttached(ctx context.Context, r stageRequest, ref ceph.ImageRef) error {
	if !r.hasAttachRecord() {
		return nil
	}
	// A publish context made for another node means the kubelet and this
	// plugin disagree on the node's ID (the CO's node ID and --node-id); the
	// record would refuse it too, but not say why.
	if n, ok := r.publish[attach.ContextNode]; ok && n != d.opts.NodeID {
		return status.Errorf(codes.FailedPrecondition, "volume %s was published to node %q, and this node plugin's --node-id is %q: each node must run its plugin with the node ID the kubelet registered (the chart passes the node name)", r.volumeID, n, d.opts.NodeID)
	}
	g := r.publish[attach.ContextGeneration]
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return invalid("publish_context %s %q is not a number", attach.ContextGeneration, g)
	}
	rec, _, err := attach.Store{Backend: d.opts.Backend, Creds: r.creds}.Load(ctx, ref)
	if err != nil {
		return statusOf(err, "read attachments of "+ref.String())
	}
	return statusOf(rec.Check(d.opts.NodeID, gen), "volume image "+ref.String())
}

// nodeImage finds the image: from the volume context (dynamic volumes carry
// pool and imageName; static PersistentVolumes name them with
// volumeAttributes clusterID or monitors, pool and imageName), else from the
// volume ID.
func (d *nodeService) nodeImage(ctx context.Context, volumeID string, vc map[string]string, cr ceph.Credentials) (ceph.ImageRef, error) {
	pool, image := vc["pool"], vc["imageName"]
	if pool != "" && image != "" {
		return d.imageFromContext(vc, pool, image)
	}
	id, err := volid.Decode(volumeID)
	if err != nil {
		return ceph.ImageRef{}, status.Errorf(codes.NotFound, "volume %q: %v; a static volume must set volumeAttributes clusterID (or monitors), pool and imageName", volumeID, err)
	}
	ref, err := d.imageRef(ctx, id, cr)
	if errors.Is(err, errPoolGone) {
		return ceph.ImageRef{}, status.Errorf(codes.NotFound, "volume %q: its pool no longer exists", volumeID)
	}
	return ref, err
}

func (d *nodeService) imageFromContext(vc map[string]string, pool, image string) (ceph.ImageRef, error) {
	if err := ceph.ValidatePoolName(pool); err != nil {
		return ceph.ImageRef{}, invalid("volume attribute pool: %v", err)
	}
	if err := volid.ValidateImageName(image); err != nil {
		return ceph.ImageRef{}, invalid("volume attribute imageName: %v", err)
	}
	p, err := params.ParseVolume(clusterParams(vc))
	if err != nil {
		return ceph.ImageRef{}, statusOf(err, "volume attributes")
	}
	cl, err := d.clusterFor(p)
	if err != nil {
		return ceph.ImageRef{}, err
	}
	return ceph.ImageRef{Cluster: cl, Pool: pool, Name: image}, nil
}

// clusterParams keeps the cluster-naming keys of a volume context.
func clusterParams(vc map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range []string{params.KeyClusterID, params.KeyMonitors} {
		if v, ok := vc[k]; ok {
			out[k] = v
		}
	}
	return out
}

func mapperImage(ref ceph.ImageRef, cr ceph.Credentials, info ceph.ImageHeader) mapper.Image {
	return mapper.Image{
		Monitors: ref.Cluster.Monitors, User: cr.User, Key: cr.Key,
		Pool: ref.Pool, RadosNamespace: ref.Cluster.RadosNamespace, Name: ref.Name,
		Features: info.Features, ClusterFSID: info.ClusterFSID,
	}
}

// NodeUnstageVolume implements csi.NodeServer.
func (d *nodeService) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if req.GetStagingTargetPath() == "" {
		return nil, invalid("staging_target_path is required")
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
	if st == nil {
		// Never staged here, or already unstaged: only a stray mount can be left.
		if err := d.mounter.Unmount(ctx, req.GetStagingTargetPath()); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", req.GetStagingTargetPath(), err)
		}
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if st.VolumeID != req.GetVolumeId() {
		return nil, status.Errorf(codes.FailedPrecondition, "staging path %s holds volume %s, not %s", req.GetStagingTargetPath(), st.VolumeID, req.GetVolumeId())
	}
	if err := d.teardownStage(ctx, st); err != nil {
		return nil, err
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// teardownStage unmounts the staging path, unmaps the device and forgets
// the volume, each step only once the one before succeeded.
func (d *nodeService) teardownStage(ctx context.Context, st *stageState) error {
	if err := d.mounter.Unmount(ctx, st.StagingPath); err != nil {
		return status.Errorf(codes.Internal, "unmount %s: %v", st.StagingPath, err)
	}
	// Mounted stays true in the file until it goes: a restage checks the
	// mount table too, so a stale flag costs nothing, and unstaging spares
	// a synced write.
	st.Mounted = false
	dev := st.Device
	if dev == nil {
		// Staging died between map and record: describe the image so the
		// mapper can find the mapping itself.
		dev = &mapper.Device{Mapper: st.Mapper, Attrs: map[string]string{
			mapper.AttrPool: st.Image.Pool, mapper.AttrNamespace: st.Image.Namespace, mapper.AttrImage: st.Image.Name,
		}}
	}
	m, ok := d.mappers[st.Mapper]
	if !ok {
		return status.Errorf(codes.Internal, "volume was staged with mapper %q, which this plugin does not have", st.Mapper)
	}
	// The LUKS device sits on the mapped one: it goes first.
	if st.CryptName != "" {
		if err := d.crypt.Close(ctx, st.CryptName); err != nil {
			return statusOf(err, "close the encrypted device of volume "+st.VolumeID)
		}
	}
	if err := m.Unmap(ctx, *dev); err != nil {
		return statusOf(err, "unmap "+dev.Path)
	}
	if err := removeState(st.StagingPath); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	d.index.drop(st.VolumeID)
	return nil
}

// cleanupTimeout bounds a rollback that runs after the caller's deadline.
const cleanupTimeout = 2 * time.Minute
