package mapper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/keylock"
)

// Resolver resolves monitor host names; *net.Resolver implements it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// krbd maps images with the kernel rbd driver through /sys/bus/rbd
// (Documentation/ABI/testing/sysfs-bus-rbd). It runs no command: the add
// string, which carries the key, goes from memory into one sysfs write.
type krbd struct {
	cfg   Config
	bus   string // <sysfs>/bus/rbd
	locks keylock.Locks

	mu sync.Mutex
	// pending holds adds whose sysfs write outlived the caller's deadline.
	// The kernel may still finish them; a retry must wait for that instead
	// of writing a second add, which would map the image twice.
	pending map[string]*pendingWrite
}

type pendingWrite struct {
	started time.Time
	done    chan struct{}
	err     error
}

func newKRBD(cfg Config) *krbd {
	return &krbd{
		cfg:     cfg,
		bus:     filepath.Join(cfg.SysfsRoot, "bus", "rbd"),
		pending: map[string]*pendingWrite{},
	}
}

func (k *krbd) Name() string { return KRBD }

// Map implements Mapper.
func (k *krbd) Map(ctx context.Context, img Image, opts MapOptions) (Device, error) {
	return mapImage(ctx, k.cfg.DefaultTimeout, mapSteps{name: KRBD, locks: &k.locks, mapLocked: k.mapLocked}, img, opts)
}

func (k *krbd) mapLocked(ctx context.Context, img Image, opts MapOptions, extra []option) (Device, error) {
	lateAdd, err := k.waitPending(ctx, img.Spec())
	if err != nil {
		return Device{}, err
	}
	if lateAdd {
		// An earlier, timed-out add of this image has since succeeded.
		id, err := k.waitForDevice(ctx, img)
		if err != nil {
			return Device{}, err
		}
		return k.existingDevice(ctx, img, id, opts.ReadOnly)
	}
	if id, found, err := k.findDevice(img); err != nil || found {
		if err != nil {
			return Device{}, err
		}
		klog.V(4).InfoS("krbd: image already mapped", "image", img.Spec(), "id", id)
		return k.existingDevice(ctx, img, id, opts.ReadOnly)
	}
	if err := k.checkAvailable(); err != nil {
		return Device{}, err
	}
	if err := k.checkFeatures(img, opts.ReadOnly); err != nil {
		return Device{}, err
	}
	mons, err := krbdMonitors(img.Monitors, extra)
	if err != nil {
		return Device{}, err
	}
	resolved, err := resolveMonitors(ctx, k.cfg.Resolver, mons)
	if err != nil {
		return Device{}, err
	}
	start := time.Now()
	if err := k.writeAdd(ctx, img, buildAddRequest(resolved, img, extra, opts.ReadOnly)); err != nil {
		return Device{}, k.diagnoseMapFailure(ctx, img, resolved, start, err)
	}
	id, err := k.waitForDevice(ctx, img)
	if err != nil {
		return Device{}, err
	}
	klog.InfoS("krbd: mapped image", "image", img.Spec(), "id", id, "readOnly", opts.ReadOnly)
	return k.device(ctx, img, id, opts.ReadOnly)
}

// existingDevice returns an existing mapping if its access mode fits.
func (k *krbd) existingDevice(ctx context.Context, img Image, id string, readOnly bool) (Device, error) {
	ro, known := blockReadOnly(k.cfg.SysfsRoot, "rbd"+id)
	if known && ro != readOnly {
		return Device{}, fmt.Errorf("%w: %s is already mapped at %s with read-only=%t, requested read-only=%t; unstage the other user or unmap it first",
			ErrMappingConflict, img.Spec(), k.devPath(id), ro, readOnly)
	}
	return k.device(ctx, img, id, readOnly)
}

// device waits for the device node (udev/devtmpfs creates it
// asynchronously) and builds the Device.
func (k *krbd) device(ctx context.Context, img Image, id string, readOnly bool) (Device, error) {
	path := k.devPath(id)
	if err := waitForPath(ctx, path); err != nil {
		return Device{}, fmt.Errorf("%w: %s is mapped as rbd id %s but %s did not appear (is udev or devtmpfs managing %s?); a retry reuses the mapping: %w",
			ErrMapFailed, img.Spec(), id, path, k.cfg.DevRoot, err)
	}
	return Device{
		Path:   path,
		Mapper: KRBD,
		Attrs: map[string]string{
			AttrDevID:     id,
			AttrPool:      img.Pool,
			AttrNamespace: img.RadosNamespace,
			AttrImage:     img.Name,
			AttrReadOnly:  strconv.FormatBool(readOnly),
		},
	}, nil
}

func (k *krbd) devPath(id string) string {
	return filepath.Join(k.cfg.DevRoot, "rbd"+id)
}

// checkAvailable fails with guidance when the kernel has no rbd driver.
func (k *krbd) checkAvailable() error {
	if _, err := os.Stat(k.bus); err != nil {
		return fmt.Errorf("%w: krbd is not available on this node (%s: %v): load the rbd kernel module (modprobe rbd) if the kernel has it, or use StorageClass parameter mounter: rbd-nbd or fuse",
			ErrUnsupported, k.bus, err)
	}
	return nil
}

// checkFeatures refuses images whose features the kernel lacks, before the
// kernel refuses them with a bare ENXIO.
func (k *krbd) checkFeatures(img Image, readOnly bool) error {
	raw, err := os.ReadFile(filepath.Join(k.bus, "supported_features"))
	if errors.Is(err, os.ErrNotExist) {
		// Kernels before 4.11 do not publish it; the kernel still checks.
		klog.V(2).InfoS("krbd: kernel does not publish supported_features; skipping feature check", "image", img.Spec())
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: reading supported_features: %v", ErrMapFailed, err)
	}
	supported, err := parseFeatureMask(string(raw))
	if err != nil {
		return fmt.Errorf("%w: parsing %s/supported_features %q: %v", ErrMapFailed, k.bus, strings.TrimSpace(string(raw)), err)
	}
	missing, unknown := missingFeatures(img.Features, supported, readOnly)
	if unknown != 0 {
		klog.V(2).InfoS("krbd: image has features unknown to the driver; leaving the decision to the kernel", "image", img.Spec(), "features", fmt.Sprintf("0x%x", uint64(unknown)))
	}
	if missing != 0 {
		return unsupportedFeaturesError(img, missing, supported)
	}
	return nil
}

// controlFile returns add_single_major (or remove_single_major) when the
// module has single_major, else the legacy file: writing the legacy file
// when single_major exists fails.
func (k *krbd) controlFile(op string) string {
	single := filepath.Join(k.bus, op+"_single_major")
	if _, err := os.Stat(single); err == nil {
		return single
	}
	return filepath.Join(k.bus, op)
}

// buildAddRequest builds "MONS name=USER,secret=KEY[,_pool_ns=NS][,ro][,EXTRA] POOL IMAGE -"
// in a byte slice the caller zeroes after the write. Every field was
// validated, so none can add a token or an option.
func buildAddRequest(mons []string, img Image, extra []option, readOnly bool) []byte {
	opts := []string{"name=" + img.User}
	if img.RadosNamespace != "" {
		opts = append(opts, "_pool_ns="+img.RadosNamespace)
	}
	if readOnly {
		opts = append(opts, "ro")
	}
	if len(extra) > 0 {
		opts = append(opts, joinOptions(extra))
	}
	monList := strings.Join(mons, ",")
	rest := "," + strings.Join(opts[1:], ",")
	if len(opts) == 1 {
		rest = ""
	}
	n := len(monList) + len(" name=") + len(img.User) + len(",secret=") + len(img.Key) + len(rest) +
		len(img.Pool) + len(img.Name) + 5
	req := make([]byte, 0, n)
	req = append(req, monList...)
	req = append(req, " name="...)
	req = append(req, img.User...)
	req = append(req, ",secret="...)
	req = append(req, img.Key...)
	req = append(req, rest...)
	req = append(req, ' ')
	req = append(req, img.Pool...)
	req = append(req, ' ')
	req = append(req, img.Name...)
	req = append(req, " -"...)
	return req
}

// writeAdd writes the add request. The write can block for as long as the
// kernel tries to reach the cluster (mount_timeout, 60 s by default), so it
// runs in a goroutine; when ctx ends first, the write is left pending (see
// krbd.pending) and ErrMapTimeout returned.
func (k *krbd) writeAdd(ctx context.Context, img Image, req []byte) error {
	key := img.Spec()
	p := &pendingWrite{started: time.Now(), done: make(chan struct{})}
	k.mu.Lock()
	k.pending[key] = p
	k.mu.Unlock()
	path := k.controlFile("add")
	go func() {
		p.err = writeSysfs(path, req)
		clear(req) // the request holds the key
		k.mu.Lock()
		if k.pending[key] == p {
			delete(k.pending, key)
		}
		k.mu.Unlock()
		close(p.done)
	}()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%w: the kernel did not finish mapping %s before the deadline (%v); the map continues in the background and a retry picks it up",
			ErrMapTimeout, img.Spec(), ctx.Err())
	}
}

// hasPending reports whether an add of key is still in the kernel.
func (k *krbd) hasPending(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pending[key] != nil
}

// waitPending waits for an add of this image left over from an earlier
// timed-out call. succeeded reports that there was one and the kernel
// accepted it, so the device exists.
func (k *krbd) waitPending(ctx context.Context, key string) (succeeded bool, err error) {
	k.mu.Lock()
	p := k.pending[key]
	k.mu.Unlock()
	if p == nil {
		return false, nil
	}
	klog.V(2).InfoS("krbd: waiting for an earlier map still pending in the kernel", "image", key, "since", p.started)
	select {
	case <-p.done:
		return p.err == nil, nil
	case <-ctx.Done():
		return false, fmt.Errorf("%w: an earlier map of %s started at %s is still waiting for the kernel (cluster unreachable?); retry later",
			ErrMapTimeout, key, p.started.Format(time.RFC3339))
	}
}

// writeSysfs writes data in one write(2), as sysfs store handlers expect.
func writeSysfs(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// writeSysfsCtx is writeSysfs bounded by ctx (the write itself cannot be
// interrupted; it finishes in the background).
func writeSysfsCtx(ctx context.Context, path string, data []byte) error {
	done := make(chan error, 1)
	go func() { done <- writeSysfs(path, data) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitForDevice finds the device a successful add created. The kernel
// registers it before the write returns; polling (bounded by ctx) only
// tolerates sysfs showing it a moment later.
func (k *krbd) waitForDevice(ctx context.Context, img Image) (string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		id, found, err := k.findDevice(img)
		if err != nil || found {
			return id, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: the kernel accepted the map of %s but no %s/devices entry matches it", ErrMapFailed, img.Spec(), k.bus)
		case <-t.C:
		}
	}
}

// findDevice scans /sys/bus/rbd/devices for a head (non-snapshot) mapping
// of img. Ids are scanned in numeric order so the result is stable.
func (k *krbd) findDevice(img Image) (string, bool, error) {
	dir := filepath.Join(k.bus, "devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%w: listing %s: %v", ErrMapFailed, dir, err)
	}
	ids := numericNames(entries)
	for _, id := range ids {
		if k.deviceIs(id, img.Pool, img.RadosNamespace, img.Name, img.ClusterFSID) {
			return strconv.Itoa(id), true, nil
		}
	}
	return "", false, nil
}

func numericNames(entries []os.DirEntry) []int {
	var ids []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= 0 {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids
}

// deviceIs reports whether rbd device id maps the head of pool/ns/name.
// config_info is never read: it holds the add string, key included.
func (k *krbd) deviceIs(id any, pool, ns, name, fsid string) bool {
	dir := filepath.Join(k.bus, "devices", fmt.Sprint(id))
	attr := func(a string) (string, bool) {
		b, err := os.ReadFile(filepath.Join(dir, a))
		return strings.TrimSpace(string(b)), err == nil
	}
	p, ok1 := attr("pool")
	n, ok2 := attr("name")
	snap, ok3 := attr("current_snap")
	if !ok1 || !ok2 || !ok3 || p != pool || n != name || snap != "-" {
		return false
	}
	// pool_ns exists since kernel 4.19; older kernels cannot map a
	// namespace at all, so absent means the default namespace.
	if gotNS, _ := attr("pool_ns"); gotNS != ns {
		return false
	}
	gotFSID, _ := attr("cluster_fsid") // absent on old kernels: ""
	return sameCluster(gotFSID, fsid)
}

// Unmap implements Mapper.
func (k *krbd) Unmap(ctx context.Context, dev Device) error {
	return k.unmap(ctx, dev, false)
}

// ForceUnmap implements ForceUnmapper: "N force" fails outstanding and
// future I/O instead of refusing a device that is still open.
func (k *krbd) ForceUnmap(ctx context.Context, dev Device) error {
	return k.unmap(ctx, dev, true)
}

func (k *krbd) unmap(ctx context.Context, dev Device, force bool) error {
	ctx, cancel := withDeadline(ctx, k.cfg.DefaultTimeout)
	defer cancel()
	id, img, err := krbdDeviceAttrs(dev)
	if err != nil {
		return err
	}
	unlock, err := k.locks.Lock(ctx, img.Spec())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnmapFailed, err)
	}
	defer unlock()
	if id == "" {
		return k.unmapByImage(ctx, img, force)
	}
	// A map still pending in the kernel would create the device after we
	// looked; wait for it so that it is unmapped too.
	if lateAdd, err := k.waitPending(ctx, img.Spec()); err != nil {
		return fmt.Errorf("%w: %w", ErrUnmapFailed, err)
	} else if lateAdd {
		// Let the late device show up so it is found and removed below.
		if _, err := k.waitForDevice(ctx, img); err != nil {
			return fmt.Errorf("%w: %w", ErrUnmapFailed, err)
		}
	}
	if !k.deviceIs(id, img.Pool, img.RadosNamespace, img.Name, "") {
		// Gone, or the id was reused for another image after our device
		// went away: either way nothing of ours is left to unmap.
		klog.V(4).InfoS("krbd: device already unmapped", "image", img.Spec(), "id", id)
		return nil
	}
	return k.remove(ctx, img, id, force)
}

// unmapByImage unmaps a Device that names only the image: the caller
// crashed before it recorded which /dev/rbdN the map produced.
func (k *krbd) unmapByImage(ctx context.Context, img Image, force bool) error {
	if _, err := k.waitPending(ctx, img.Spec()); err != nil {
		return fmt.Errorf("%w: %w", ErrUnmapFailed, err)
	}
	id, found, err := k.findDevice(img)
	if err != nil || !found {
		return err
	}
	return k.remove(ctx, img, id, force)
}

// busyGrace is how long a remove that meets EBUSY keeps trying. udev
// probes a block device whenever a writer closes it (its watch rule turns
// the close into a change event, and blkid opens the device), so an
// unstage right after the last write of a raw block volume can find the
// device open for a moment; seen on Debian's 6.1 kernel with udevd
// running (make test-kernel). A real user holds it longer and gets
// ErrDeviceBusy.
const busyGrace = 5 * time.Second

func (k *krbd) remove(ctx context.Context, img Image, id string, force bool) error {
	req := id
	if force {
		req += " force"
	}
	deadline := time.Now().Add(busyGrace)
	for {
		err := writeSysfsCtx(ctx, k.controlFile("remove"), []byte(req))
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return k.removeResult(img, id, force, err, ctx.Err())
		}
		select {
		case <-ctx.Done():
			return k.removeResult(img, id, force, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// removeResult classifies the outcome of a remove write.
func (k *krbd) removeResult(img Image, id string, force bool, err, ctxErr error) error {
	switch {
	case err == nil:
		klog.InfoS("krbd: unmapped image", "image", img.Spec(), "id", id, "force", force)
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil // already gone
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("%w: %s (%s) is still in use (mounted or held open by a process); unmount it or stop its users first: %v",
			ErrDeviceBusy, k.devPath(id), img.Spec(), err)
	case ctxErr != nil:
		return fmt.Errorf("%w: unmapping %s (%s) did not finish before the deadline: %v", ErrUnmapFailed, k.devPath(id), img.Spec(), err)
	default:
		return fmt.Errorf("%w: unmapping %s (%s): %v", ErrUnmapFailed, k.devPath(id), img.Spec(), err)
	}
}

// Check implements Mapper.
func (k *krbd) Check(_ context.Context, dev Device) (bool, string) {
	id, img, err := krbdDeviceAttrs(dev)
	if err != nil {
		return false, err.Error()
	}
	if !k.deviceIs(id, img.Pool, img.RadosNamespace, img.Name, "") {
		return false, fmt.Sprintf("rbd device %s of %s is no longer mapped (the kernel removed it or it was unmapped by hand); restage the volume", k.devPath(id), img.Spec())
	}
	if _, err := os.Stat(k.devPath(id)); err != nil {
		return false, fmt.Sprintf("device node %s of %s is missing: %v", k.devPath(id), img.Spec(), err)
	}
	return true, ""
}

// krbdDeviceAttrs validates a Device from the caller's state file.
func krbdDeviceAttrs(dev Device) (string, Image, error) {
	img, err := deviceImage(dev, KRBD, nil, "")
	if err != nil {
		return "", Image{}, err
	}
	id := dev.Attrs[AttrDevID]
	if id == "" && dev.Path != "" {
		return "", Image{}, fmt.Errorf("%w: krbd device %s has no id attribute", ErrInvalidDevice, dev.Path)
	}
	if n, err := strconv.Atoi(id); id != "" && (err != nil || n < 0 || strconv.Itoa(n) != id) {
		return "", Image{}, fmt.Errorf("%w: krbd device %s has invalid id attribute %q", ErrInvalidDevice, dev.Path, id)
	}
	return id, img, nil
}

// kernelMsgr returns the messenger protocol the kernel client speaks to
// every monitor with these map options: msgr2 when ms_mode names one of
// its modes (crc, secure, prefer-crc, prefer-secure; kernel >= 5.11), else
// msgr1 (no ms_mode, or ms_mode=legacy).
func kernelMsgr(extra []option) string {
	for _, o := range extra {
		if o.Name == "ms_mode" && o.Value != "legacy" {
			return ceph.MsgrV2
		}
	}
	return ceph.MsgrV1
}

// krbdMonitors parses the monitor addresses for the kernel. The kernel
// takes plain addresses only and speaks one protocol to all of them (see
// kernelMsgr), so the v1:/v2: prefixes are stripped and an address pinned
// to the other protocol is left out: it cannot answer the kernel. When no
// address is left the map fails at once instead of timing out.
func krbdMonitors(mons []string, extra []option) ([]ceph.MonitorAddr, error) {
	want := kernelMsgr(extra)
	var out, skipped []ceph.MonitorAddr
	for _, m := range mons {
		a, err := parseMonitor(m)
		if err != nil {
			return nil, err
		}
		if a.Msgr != "" && a.Msgr != want {
			skipped = append(skipped, a)
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, msgrMismatchError(mons, want)
	}
	if len(skipped) > 0 {
		klog.V(2).InfoS("krbd: leaving out monitor addresses pinned to the messenger protocol the kernel does not speak with these map options", "kernelProtocol", want, "count", len(skipped))
	}
	return out, nil
}

func msgrMismatchError(mons []string, kernel string) error {
	if kernel == ceph.MsgrV1 {
		return fmt.Errorf("%w: every monitor address %v is pinned to msgr2 (v2:), but the kernel client speaks msgr1 unless the map options set ms_mode: add ms_mode=prefer-crc (kernel >= 5.11) to the StorageClass's map options, or list the monitors' v1 addresses",
			ErrInvalidOptions, mons)
	}
	return fmt.Errorf("%w: every monitor address %v is pinned to msgr1 (v1:), but map option ms_mode makes the kernel client speak msgr2: drop ms_mode (or use ms_mode=legacy), or list the monitors' v2 addresses",
		ErrInvalidOptions, mons)
}

// resolveMonitors turns monitor host names into IP addresses: the kernel
// parses only numeric addresses.
func resolveMonitors(ctx context.Context, r Resolver, mons []ceph.MonitorAddr) ([]string, error) {
	var out []string
	for _, m := range mons {
		ips, err := lookupHost(ctx, r, m.Host)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			out = append(out, joinHostPort(ip, m.Port))
		}
	}
	return out, nil
}

func lookupHost(ctx context.Context, r Resolver, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("%w: resolving monitor %q: %v", ErrMapFailed, host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: monitor %q resolves to no address", ErrMapFailed, host)
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

func joinHostPort(ip net.IP, port string) string {
	host := ip.String()
	if ip.To4() == nil {
		host = "[" + host + "]"
	}
	if port == "" {
		return host
	}
	return host + ":" + port
}

// waitForPath polls until path exists or ctx ends.
func waitForPath(ctx context.Context, path string) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
