package mapper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/keylock"
)

// nbd maps images with the rbd-nbd tool: userspace librbd served to the
// kernel nbd driver by one rbd-nbd daemon per image. The key reaches
// rbd-nbd through a 0600 keyring file that is deleted when the command
// returns (the daemon keeps the key in memory).
type nbd struct {
	cfg   Config
	locks keylock.Locks
	// reattachOpt is the node's --reattach-timeout, given unless the
	// StorageClass sets its own.
	reattachOpt option
}

var nbdDevRe = regexp.MustCompile(`^/dev/nbd[0-9]+$`)

var _ Reattacher = (*nbd)(nil)

// reattachTimeoutOpt is rbd-nbd's option for Config.NBDReattachTimeout.
const reattachTimeoutOpt = "reattach-timeout"

func newNBD(cfg Config) (*nbd, error) {
	d := cfg.NBDReattachTimeout
	o := option{Name: reattachTimeoutOpt, Value: strconv.FormatInt(int64(d/time.Second), 10), HasValue: true}
	// The StorageClass's allowlist bounds the node's default too.
	if err := checkValue(o, nbdOptions[reattachTimeoutOpt]); err != nil || d%time.Second != 0 || d <= 0 {
		return nil, fmt.Errorf("%w: rbd-nbd reattach timeout %v: want whole seconds from 1s to 1h", ErrInvalidOptions, d)
	}
	return &nbd{cfg: cfg, reattachOpt: o}, nil
}

func (n *nbd) Name() string { return RBDNBD }

// nbdMapped is one entry of `rbd-nbd list-mapped --format json`.
type nbdMapped struct {
	PID       int    `json:"id"`
	Pool      string `json:"pool"`
	Namespace string `json:"namespace"`
	Image     string `json:"image"`
	Snap      string `json:"snap"`
	Device    string `json:"device"`
	Cookie    string `json:"cookie"`
}

func (m nbdMapped) is(img Image) bool {
	return m.Pool == img.Pool && m.Namespace == img.RadosNamespace && m.Image == img.Name && (m.Snap == "" || m.Snap == "-") &&
		sameCluster(cookieCluster(m.Cookie), img.ClusterFSID)
}

// Map implements Mapper.
func (n *nbd) Map(ctx context.Context, img Image, opts MapOptions) (Device, error) {
	return mapImage(ctx, n.cfg.DefaultTimeout, mapSteps{name: RBDNBD, locks: &n.locks, mapLocked: n.mapLocked}, img, opts)
}

func (n *nbd) mapLocked(ctx context.Context, img Image, opts MapOptions, extra []option) (Device, error) {
	mapped, err := n.listMapped(ctx)
	if err != nil {
		return Device{}, fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	for _, m := range mapped {
		if m.is(img) {
			return n.existing(img, m, opts.ReadOnly)
		}
	}
	if prev := opts.Previous; prev != nil && prev.Mapper == RBDNBD {
		dev, attached, err := n.reattach(ctx, img, opts, extra, *prev)
		if err != nil || attached {
			return dev, err
		}
	}
	return n.mapNew(ctx, img, opts, extra)
}

func (n *nbd) existing(img Image, m nbdMapped, readOnly bool) (Device, error) {
	if ro, known := blockReadOnly(n.cfg.SysfsRoot, m.Device); known && ro != readOnly {
		return Device{}, fmt.Errorf("%w: %s is already mapped at %s with read-only=%t, requested read-only=%t; unstage the other user or unmap it first",
			ErrMappingConflict, img.Spec(), m.Device, ro, readOnly)
	}
	klog.V(4).InfoS("rbd-nbd: image already mapped", "image", img.Spec(), "device", m.Device)
	return nbdDevice(img, m.Device, m.Cookie, readOnly), nil
}

func nbdDevice(img Image, path, cookie string, readOnly bool) Device {
	return Device{
		Path:   path,
		Mapper: RBDNBD,
		Attrs: map[string]string{
			AttrPool:      img.Pool,
			AttrNamespace: img.RadosNamespace,
			AttrImage:     img.Name,
			AttrCookie:    cookie,
			AttrReadOnly:  strconv.FormatBool(readOnly),
		},
	}
}

// reattach connects a new rbd-nbd process to the nbd device an earlier
// (now dead) process served, so that what is mounted on it keeps working.
// attached is false when there is nothing to re-attach to.
func (n *nbd) reattach(ctx context.Context, img Image, opts MapOptions, extra []option, prev Device) (Device, bool, error) {
	if !nbdDevRe.MatchString(prev.Path) || prev.Attrs[AttrPool] != img.Pool ||
		prev.Attrs[AttrNamespace] != img.RadosNamespace || prev.Attrs[AttrImage] != img.Name ||
		!sameCluster(cookieCluster(prev.Attrs[AttrCookie]), img.ClusterFSID) {
		return Device{}, false, nil
	}
	st := n.kernelState(prev.Path)
	if !st.connected {
		return Device{}, false, nil
	}
	cookie := prev.Attrs[AttrCookie]
	if st.hasBackend && st.backend != cookie {
		klog.InfoS("rbd-nbd: previous device now serves another backend; mapping anew", "image", img.Spec(), "device", prev.Path)
		return Device{}, false, nil
	}
	args := []string{"attach", "--device", prev.Path, "--try-netlink"}
	if st.hasBackend {
		// rbd-nbd refuses --cookie on kernels without backend support.
		args = append(args, "--cookie", cookie)
	}
	if _, err := n.runWithKey(ctx, img, args, opts, extra); err != nil {
		return Device{}, false, n.classify(img, "re-attaching "+prev.Path+" for", err)
	}
	klog.InfoS("rbd-nbd: re-attached image to its device", "image", img.Spec(), "device", prev.Path)
	return nbdDevice(img, prev.Path, cookie, opts.ReadOnly), true, nil
}

// Reattach implements Reattacher.
func (n *nbd) Reattach(ctx context.Context, img Image, opts MapOptions, dev Device) (ReattachResult, error) {
	if _, err := deviceImage(dev, RBDNBD, nbdDevRe, "an nbd device"); err != nil || dev.Path == "" {
		return ReattachOther, fmt.Errorf("%w: cannot re-attach %+v: %v", ErrInvalidDevice, dev.Path, err)
	}
	var res ReattachResult
	steps := mapSteps{name: RBDNBD, locks: &n.locks, mapLocked: func(ctx context.Context, img Image, opts MapOptions, extra []option) (Device, error) {
		var err error
		res, err = n.reattachLocked(ctx, img, opts, extra, dev)
		return Device{}, err
	}}
	_, err := mapImage(ctx, n.cfg.DefaultTimeout, steps, img, opts)
	return res, err
}

func (n *nbd) reattachLocked(ctx context.Context, img Image, opts MapOptions, extra []option, dev Device) (ReattachResult, error) {
	mapped, err := n.listMapped(ctx)
	if err != nil {
		return ReattachOther, fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	for _, m := range mapped {
		switch {
		case m.Device == dev.Path && m.is(img):
			return ReattachLive, nil
		case m.Device == dev.Path || m.is(img):
			// A second process for one image, or one device for two
			// images, would corrupt the filesystem: leave it alone.
			return ReattachOther, nil
		}
	}
	_, attached, err := n.reattach(ctx, img, opts, extra, dev)
	switch {
	case err != nil:
		return ReattachOther, err
	case attached:
		return Reattached, nil
	case !n.kernelState(dev.Path).connected:
		return ReattachGone, nil
	default:
		return ReattachOther, nil
	}
}

func (n *nbd) mapNew(ctx context.Context, img Image, opts MapOptions, extra []option) (Device, error) {
	cookie, err := newCookie(img.ClusterFSID)
	if err != nil {
		return Device{}, fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	out, err := n.runWithKey(ctx, img, []string{"map", "--try-netlink", "--cookie", cookie}, opts, extra)
	if err != nil {
		return Device{}, n.classify(img, "mapping", err)
	}
	path := lastDeviceLine(out)
	if path == "" {
		return Device{}, fmt.Errorf("%w: rbd-nbd map of %s printed no device path (output %q)", ErrMapFailed, img.Spec(), tail(out, 200))
	}
	klog.InfoS("rbd-nbd: mapped image", "image", img.Spec(), "device", path, "readOnly", opts.ReadOnly)
	return nbdDevice(img, path, cookie, opts.ReadOnly), nil
}

// runWithKey runs rbd-nbd with the credentials in a temporary keyring that
// is removed as soon as the command returns.
func (n *nbd) runWithKey(ctx context.Context, img Image, head []string, opts MapOptions, extra []option) (string, error) {
	kr, err := writeTempKeyring(n.cfg.SecretDir, img.User, img.Key)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	defer kr.Remove()
	args := append([]string{}, head...)
	if opts.ReadOnly {
		args = append(args, "--read-only")
	}
	if !slices.ContainsFunc(extra, func(o option) bool { return o.Name == reattachTimeoutOpt }) {
		extra = append(extra[:len(extra):len(extra)], n.reattachOpt)
	}
	for _, o := range extra {
		args = append(args, "--"+o.Name)
		if o.HasValue {
			args = append(args, o.Value)
		}
	}
	args = append(args, "--id", img.User, "-m", strings.Join(img.Monitors, ","), "--keyring", kr.Path)
	if n.cfg.CephConf != "" {
		args = append(args, "-c", n.cfg.CephConf)
	}
	args = append(args, img.Spec())
	return runTool(ctx, n.cfg.Exec, Command{Path: n.cfg.RBDNBDPath, Args: args})
}

// classify maps an rbd-nbd failure to a package error by its message.
func (n *nbd) classify(img Image, doing string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s %s with rbd-nbd; check that this node reaches the monitors %v: %v", ErrMapTimeout, doing, img.Spec(), img.Monitors, err)
	case containsAny(msg, "failed to find unused device", "nbd module", "Module nbd not found", "failed to load nbd"):
		return fmt.Errorf("%w: no usable nbd device on this node (load the module with `modprobe nbd nbds_max=256`, or all nbd devices are in use); or use StorageClass parameter mounter: krbd or fuse: %v", ErrUnsupported, err)
	case containsAny(msg, "(2) No such file or directory", "image not found"):
		return fmt.Errorf("%w: %s %s: %v", ErrImageNotFound, doing, img.Spec(), err)
	case containsAny(msg, "(1) Operation not permitted", "(13) Permission denied"):
		return fmt.Errorf("%w: the cluster refused client.%s for %s; check the secret and the user's caps: %v", ErrAccessDenied, img.User, img.Spec(), err)
	case containsAny(msg, "(110) Connection timed out"):
		return fmt.Errorf("%w: %s %s: %v", ErrMapTimeout, doing, img.Spec(), err)
	default:
		return fmt.Errorf("%w: %s %s with rbd-nbd: %v", ErrMapFailed, doing, img.Spec(), err)
	}
}

// Unmap implements Mapper.
func (n *nbd) Unmap(ctx context.Context, dev Device) error {
	ctx, cancel := withDeadline(ctx, n.cfg.DefaultTimeout)
	defer cancel()
	img, err := deviceImage(dev, RBDNBD, nbdDevRe, "an nbd device")
	if err != nil {
		return err
	}
	unlock, err := n.locks.Lock(ctx, img.Spec())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnmapFailed, err)
	}
	defer unlock()
	if dev.Path == "" {
		if dev.Path, err = n.findMapped(ctx, img); err != nil || dev.Path == "" {
			return err
		}
	}
	ours, err := n.stillOurs(ctx, img, dev)
	if err != nil || !ours {
		return err
	}
	// rbd-nbd unmap disconnects a device even while a process holds it
	// open, failing that process's I/O: refuse instead, as krbd does.
	holder, err := waitUnopened(ctx, filepath.Join(n.cfg.DevRoot, filepath.Base(dev.Path)), "rbd-nbd")
	if err != nil {
		klog.V(2).InfoS("rbd-nbd: cannot look for processes holding the device", "device", dev.Path, "err", err)
	} else if holder != "" {
		return fmt.Errorf("%w: %s (%s) is still in use (held open by process %s); stop it first", ErrDeviceBusy, dev.Path, img.Spec(), holder)
	}
	_, err = runTool(ctx, n.cfg.Exec, Command{Path: n.cfg.RBDNBDPath, Args: []string{"unmap", dev.Path}})
	switch {
	case err == nil:
		klog.InfoS("rbd-nbd: unmapped image", "image", img.Spec(), "device", dev.Path)
		return nil
	case containsAny(err.Error(), "Device or resource busy", "(16)"):
		return fmt.Errorf("%w: %s (%s) is still in use (mounted or held open); unmount it first: %v", ErrDeviceBusy, dev.Path, img.Spec(), err)
	default:
		return fmt.Errorf("%w: unmapping %s (%s): %v", ErrUnmapFailed, dev.Path, img.Spec(), err)
	}
}

// findMapped returns the nbd device rbd-nbd serves img from, "" if none.
func (n *nbd) findMapped(ctx context.Context, img Image) (string, error) {
	mapped, err := n.listMapped(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnmapFailed, err)
	}
	for _, m := range mapped {
		if m.is(img) {
			return m.Device, nil
		}
	}
	return "", nil
}

// stillOurs decides whether dev.Path still serves img, so that Unmap never
// disconnects a device that has since been reused for another image. A
// device whose kernel backend is this mapping's cookie is ours without
// asking rbd-nbd: cookies are random per map, and kernels since 5.14
// publish them.
func (n *nbd) stillOurs(ctx context.Context, img Image, dev Device) (bool, error) {
	if cookie := dev.Attrs[AttrCookie]; cookie != "" {
		if st := n.kernelState(dev.Path); st.connected && st.hasBackend && st.backend == cookie {
			return true, nil
		}
	}
	mapped, err := n.listMapped(ctx)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnmapFailed, err)
	}
	for _, m := range mapped {
		if m.Device == dev.Path {
			return m.is(img), nil
		}
	}
	// No live rbd-nbd process serves it. The kernel may still hold the
	// connection (the daemon died), waiting for a re-attach.
	st := n.kernelState(dev.Path)
	switch {
	case !st.connected:
		return false, nil
	case st.hasBackend:
		return st.backend == dev.Attrs[AttrCookie], nil
	default:
		return false, fmt.Errorf("%w: %s is still connected but its rbd-nbd process is gone and this kernel cannot tell which image it served; if it is %s, run `rbd-nbd unmap %s`",
			ErrUnmapFailed, dev.Path, img.Spec(), dev.Path)
	}
}

// Check implements Mapper.
func (n *nbd) Check(ctx context.Context, dev Device) (bool, string) {
	ctx, cancel := withDeadline(ctx, n.cfg.DefaultTimeout)
	defer cancel()
	img, err := deviceImage(dev, RBDNBD, nbdDevRe, "an nbd device")
	if err != nil {
		return false, err.Error()
	}
	if n.servedByItsDaemon(dev) {
		return true, ""
	}
	mapped, err := n.listMapped(ctx)
	if err != nil {
		return false, fmt.Sprintf("cannot list rbd-nbd mappings: %v", err)
	}
	for _, m := range mapped {
		if m.Device == dev.Path && m.is(img) {
			return true, ""
		}
	}
	if n.kernelState(dev.Path).connected {
		return false, fmt.Sprintf("the rbd-nbd process serving %s (%s) is gone, so I/O on it stalls; past the kernel's reattach timeout new I/O fails and I/O in flight when it died stays blocked; the plugin re-attaches it at start-up when --secrets-dir holds a credential for the volume's cluster, else the next NodeStageVolume does", dev.Path, img.Spec())
	}
	return false, fmt.Sprintf("%s (%s) is no longer mapped (unmapped, or no rbd-nbd process re-attached within the reattach timeout): I/O on it fails; restart the pods using the volume so it is staged again", dev.Path, img.Spec())
}

// listMapped returns rbd-nbd's mappings on this node. rbd-nbd list-mapped
// lists the nbd devices with a connection, those whose sysfs directory has
// a pid file; with none there is nothing to list, and when this mapper's
// own processes serve them all, sysfs and /proc say what the tool would:
// then it is not run. Starting a Ceph tool costs about 0.1 s on a host and
// a second or more in an emulated guest, every map asks, and the tool's
// own work grows with the node's devices.
func (n *nbd) listMapped(ctx context.Context) ([]nbdMapped, error) {
	if mapped, complete := n.procMappings(); complete {
		return mapped, nil
	}
	out, err := runTool(ctx, n.cfg.Exec, Command{Path: n.cfg.RBDNBDPath, Args: []string{"list-mapped", "--format", "json"}})
	if err != nil {
		return nil, err
	}
	var mapped []nbdMapped
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &mapped); err != nil {
		return nil, fmt.Errorf("parsing rbd-nbd list-mapped output: %w", err)
	}
	return mapped, nil
}

// servedByItsDaemon tells from sysfs and /proc alone that dev is served
// by the rbd-nbd process this mapper started for it (see procMapping).
// rbd-nbd list-mapped reads the same files for every connected device, so
// a health sweep through it grows with the square of the node's rbd-nbd
// volumes; false here only means "ask rbd-nbd".
func (n *nbd) servedByItsDaemon(dev Device) bool {
	cookie := dev.Attrs[AttrCookie]
	if cookie == "" {
		return false
	}
	m, ok := n.procMapping(filepath.Base(dev.Path))
	return ok && m.Cookie == cookie
}

// procMappings reads this node's rbd-nbd mappings from sysfs and /proc,
// as rbd-nbd list-mapped does, without starting a process: none when no
// nbd device is connected. complete is false when some connected device
// is not known by procMapping, or sysfs cannot be read, and then only
// rbd-nbd can tell.
func (n *nbd) procMappings() (mapped []nbdMapped, complete bool) {
	entries, err := os.ReadDir(filepath.Join(n.cfg.SysfsRoot, "block"))
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "nbd") {
			continue
		}
		// a connected device has a pid file; rbd-nbd lists only those
		_, err := os.Stat(filepath.Join(n.cfg.SysfsRoot, "block", e.Name(), "pid"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		m, ok := n.procMapping(e.Name())
		if !ok {
			return nil, false
		}
		mapped = append(mapped, m)
	}
	return mapped, true
}

// procMapping identifies the mapping behind a connected nbd device from
// the process the kernel names as its server, when that process is an
// rbd-nbd this mapper started (its keyring in SecretDir, the image last)
// and the kernel's backend for the device is the cookie that process was
// given. Cookies are random per map, so a reused pid, a process serving
// another device or a mapping made by hand never matches. Not known: a
// device re-attached after its first process died (the kernel still
// names that one), a plugin outside the host's pid namespace, kernels
// without backends (before 5.14).
func (n *nbd) procMapping(name string) (nbdMapped, bool) {
	dir := filepath.Join(n.cfg.SysfsRoot, "block", name)
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return nbdMapped{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nbdMapped{}, false
	}
	cmdline, err := os.ReadFile(filepath.Join(n.cfg.ProcRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nbdMapped{}, false
	}
	m, ok := n.parseOwnCommand(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"))
	if !ok {
		return nbdMapped{}, false
	}
	st := n.kernelState("/dev/" + name)
	if !st.hasBackend || st.backend != m.Cookie {
		return nbdMapped{}, false
	}
	m.PID, m.Device = pid, "/dev/"+name
	return m, true
}

// parseOwnCommand reads back the image and cookie from a command line
// runWithKey built: rbd-nbd map|attach ... --cookie C ... --keyring
// <SecretDir>/<dir>/keyring ... pool[/namespace]/image.
func (n *nbd) parseOwnCommand(args []string) (nbdMapped, bool) {
	if len(args) < 3 || filepath.Base(args[0]) != "rbd-nbd" || (args[1] != "map" && args[1] != "attach") {
		return nbdMapped{}, false
	}
	keyring := argValue(args, "--keyring")
	if keyring == "" || filepath.Dir(filepath.Dir(keyring)) != filepath.Clean(n.cfg.SecretDir) {
		return nbdMapped{}, false
	}
	cookie := argValue(args, "--cookie")
	spec := args[len(args)-1]
	parts := strings.Split(spec, "/")
	if cookie == "" || strings.HasPrefix(spec, "-") || strings.Contains(spec, "@") || slices.Contains(parts, "") {
		return nbdMapped{}, false
	}
	switch len(parts) {
	case 2:
		return nbdMapped{Pool: parts[0], Image: parts[1], Cookie: cookie}, true
	case 3:
		return nbdMapped{Pool: parts[0], Namespace: parts[1], Image: parts[2], Cookie: cookie}, true
	default:
		return nbdMapped{}, false
	}
}

// argValue is the argument after flag, "" if there is none.
func argValue(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// nbdKernelState is what sysfs says about an nbd device.
type nbdKernelState struct {
	connected  bool   // /sys/block/nbdX/pid exists while a connection is set up
	hasBackend bool   // kernel >= 5.14 publishes the backend (cookie)
	backend    string // the cookie
}

func (n *nbd) kernelState(devPath string) nbdKernelState {
	dir := filepath.Join(n.cfg.SysfsRoot, "block", filepath.Base(devPath))
	var st nbdKernelState
	if _, err := os.Stat(filepath.Join(dir, "pid")); err == nil {
		st.connected = true
	}
	if b, err := os.ReadFile(filepath.Join(dir, "backend")); err == nil {
		st.hasBackend = true
		st.backend = strings.TrimSpace(string(b))
	}
	return st
}

// blockReadOnly reads /sys/block/<dev>/ro.
func blockReadOnly(sysfs, devPath string) (ro, known bool) {
	b, err := os.ReadFile(filepath.Join(sysfs, "block", filepath.Base(devPath), "ro"))
	if err != nil {
		return false, false
	}
	return strings.TrimSpace(string(b)) == "1", true
}

func lastDeviceLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 0 && nbdDevRe.MatchString(f[0]) {
			return f[0]
		}
	}
	return ""
}

// newCookie returns 128 random bits in hex, after the cluster's fsid and a
// dash when it is known: rbd-nbd list-mapped reports the cookie but not the
// cluster, so the cookie tells two clusters' same-named images apart.
func newCookie(fsid string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating device cookie: %w", err)
	}
	if fsid == "" {
		return hex.EncodeToString(b), nil
	}
	return strings.ToLower(fsid) + "-" + hex.EncodeToString(b), nil
}

// cookieCluster is the fsid newCookie put into cookie; "" for cookies
// without one (made before, or without a known fsid).
func cookieCluster(cookie string) string {
	const fsidLen = 36
	if len(cookie) != fsidLen+1+32 || cookie[fsidLen] != '-' || !fsidRe.MatchString(cookie[:fsidLen]) {
		return ""
	}
	return cookie[:fsidLen]
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
