package mapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/atomicfile"
	"github.com/rbd-csi/rbd-csi/internal/keylock"
)

// fuse maps an image with one rbd-fuse process per image, which exposes
// the image as the file <mountpoint>/<image>, and a loop device over that
// file. It needs neither krbd nor nbd in the kernel, only FUSE and loop.
//
// State lives under StateDir so that a restarted plugin finds it:
//
//	<StateDir>/fuse/<pool>/<image>/mnt/          rbd-fuse mountpoint
//	<StateDir>/fuse/<pool>/<image>/mnt/<image>   the image as a file
//	<StateDir>/fuse/<pool>/<image>/rbd-fuse.pid
//	<StateDir>/fuse/<pool>/<image>/rbd-fuse.log  rbd-fuse stdout/stderr
//	<StateDir>/fuse/<pool>/<image>/ceph.conf     mon_host etc., no secret
//	<StateDir>/fuse-locks/<pool>@<image>.lock    flock per image
//
// rbd-fuse runs in its own session, so it survives a restart of the plugin
// process. It does not survive the death of its container's cgroup or PID
// namespace: run the node plugin with hostPID and do not restart its
// container while volumes are staged, or expect Check to report them
// unhealthy and Map to re-establish them.
type fuse struct {
	cfg       Config
	root      string // <StateDir>/fuse, absolute and symlink-free
	lockDir   string
	locks     keylock.Locks
	probes    prober
	mountinfo string
}

const (
	// fuseFSType is what the kernel reports for rbd-fuse mounts.
	fuseFSType = "fuse.rbd-fuse"
	// probeTimeout bounds a health probe of a mounted rbd-fuse.
	probeTimeout = 10 * time.Second
	// fuseAttr is an extended attribute rbd-fuse serves on its root from
	// memory (the size it gives images created through the mount).
	fuseAttr = "user.rbdfuse.imagesize"
	// cleanupTimeout bounds cleanup after the caller's deadline passed.
	cleanupTimeout = 30 * time.Second
)

func newFuse(cfg Config) (*fuse, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: mapper %q needs Config.StateDir", ErrInvalidOptions, Fuse)
	}
	root, err := prepareDir(filepath.Join(cfg.StateDir, "fuse"))
	if err != nil {
		return nil, err
	}
	lockDir, err := prepareDir(filepath.Join(cfg.StateDir, "fuse-locks"))
	if err != nil {
		return nil, err
	}
	return &fuse{cfg: cfg, root: root, lockDir: lockDir, mountinfo: "/proc/self/mountinfo"}, nil
}

func prepareDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("%w: creating state directory %s: %v", ErrMapFailed, dir, err)
	}
	abs, err := cleanAbs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: resolving state directory %s: %v", ErrMapFailed, dir, err)
	}
	return abs, nil
}

func (f *fuse) Name() string { return Fuse }

// fusePaths are the per-image state paths.
type fusePaths struct {
	dir, mnt, file, pid, log, conf, lock string
	// cluster records the fsid of the cluster rbd-fuse serves (absent for
	// mappings made before fsids were recorded, or without one).
	cluster string
}

func (f *fuse) paths(pool, image string) fusePaths {
	dir := filepath.Join(f.root, pool, image)
	mnt := filepath.Join(dir, "mnt")
	return fusePaths{
		dir:     dir,
		mnt:     mnt,
		file:    filepath.Join(mnt, image),
		pid:     filepath.Join(dir, "rbd-fuse.pid"),
		log:     filepath.Join(dir, "rbd-fuse.log"),
		conf:    filepath.Join(dir, "ceph.conf"),
		lock:    filepath.Join(f.lockDir, pool+"@"+image+".lock"),
		cluster: filepath.Join(dir, "cluster-fsid"),
	}
}

// Map implements Mapper.
func (f *fuse) Map(ctx context.Context, img Image, opts MapOptions) (Device, error) {
	return mapImage(ctx, f.cfg.DefaultTimeout, mapSteps{
		name:  Fuse,
		admit: admitFuse,
		lock: func(ctx context.Context, img Image) (func(), error) {
			return f.lock(ctx, img.Spec(), f.paths(img.Pool, img.Name).lock)
		},
		mapLocked: func(ctx context.Context, img Image, opts MapOptions, _ []option) (Device, error) {
			return f.mapLocked(ctx, img, f.paths(img.Pool, img.Name), opts)
		},
		proceedsItself: true,
	}, img, opts)
}

// admitFuse refuses what rbd-fuse cannot open.
func admitFuse(img Image) error {
	if img.RadosNamespace != "" {
		return fmt.Errorf("%w: rbd-fuse cannot open images in a rados namespace (%s); use StorageClass parameter mounter: krbd or rbd-nbd for this pool",
			ErrUnsupported, img.Spec())
	}
	return nil
}

func (f *fuse) mapLocked(ctx context.Context, img Image, p fusePaths, opts MapOptions) (Device, error) {
	readOnly := opts.ReadOnly
	state, err := f.inspect(ctx, p)
	if err != nil {
		return Device{}, err
	}
	if state == fuseAlive || state == fuseUnresponsive {
		if err := checkFuseCluster(p, img); err != nil {
			return Device{}, err
		}
	}
	switch state {
	case fuseAlive:
		if err := opts.proceed(); err != nil {
			return Device{}, err
		}
		return f.ensureLoop(ctx, img, p, readOnly)
	case fuseUnresponsive:
		return Device{}, fmt.Errorf("%w: rbd-fuse for %s is mounted but does not answer (cluster unreachable?); see %s", ErrMapTimeout, img.Spec(), p.log)
	case fuseDead:
		klog.InfoS("fuse: rbd-fuse for image is dead; re-establishing", "image", img.Spec())
		if err := f.teardown(ctx, img, p, true); err != nil {
			return Device{}, err
		}
	case fuseAbsent:
		// Leftovers of an rbd-fuse whose mount vanished (lazily unmounted,
		// or killed with its mount namespace): idle loop devices on the
		// file and a stray process. A loop device still in use is not
		// touched: it may be live in another mount namespace.
		if err := f.teardown(ctx, img, p, false); err != nil {
			if errors.Is(err, ErrDeviceBusy) {
				return Device{}, fmt.Errorf("%w; no rbd-fuse mount is visible at %s in this mount namespace: StateDir must be a hostPath with Bidirectional mount propagation so that a restarted plugin sees it", err, p.mnt)
			}
			return Device{}, err
		}
	}
	if err := f.startRBDFuse(ctx, img, p, opts.proceed); err != nil {
		return Device{}, err
	}
	dev, err := f.ensureLoop(ctx, img, p, readOnly)
	if err != nil {
		// Do not leave the rbd-fuse we just started holding the image
		// open: its watch would make deleting the volume fail.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if terr := f.teardown(cctx, img, p, false); terr != nil {
			klog.ErrorS(terr, "fuse: cleanup after failed loop attach", "image", img.Spec())
		}
	}
	return dev, err
}

type fuseState int

const (
	fuseAbsent       fuseState = iota // not mounted
	fuseAlive                         // mounted and answering
	fuseDead                          // mounted but the daemon is gone
	fuseUnresponsive                  // mounted, daemon does not answer in time
)

// inspect looks up the image file through rbd-fuse, which proves that it
// serves the image and reaches the cluster. Its cost grows with the pool:
// rbd-fuse lists every image of the pool to answer a lookup. Map and
// Refresh need that proof; the periodic health check uses ping.
func (f *fuse) inspect(ctx context.Context, p fusePaths) (fuseState, error) {
	return f.mountState(ctx, p, func() error { return f.probes.stat(ctx, p.file, probeTimeout) })
}

// ping asks rbd-fuse for an attribute of its mount's root, which it answers
// from memory: the daemon is there and its request loop is not stuck, at
// the same cost whatever the pool holds (NodeGetVolumeStats calls Check
// for every volume of the node, every minute).
func (f *fuse) ping(ctx context.Context, p fusePaths) (fuseState, error) {
	return f.mountState(ctx, p, func() error { return f.probes.xattr(ctx, p.mnt, fuseAttr, probeTimeout) })
}

// mountState classifies p's mount by whether the kernel lists it and how
// probe, a request to rbd-fuse, ends.
func (f *fuse) mountState(ctx context.Context, p fusePaths, probe func() error) (fuseState, error) {
	fstype, err := mountAt(f.mountinfo, p.mnt)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	switch {
	case fstype == "":
		return fuseAbsent, nil
	case fstype != fuseFSType:
		return 0, fmt.Errorf("%w: %s is mounted with %q, not rbd-fuse; unmount it by hand", ErrMapFailed, p.mnt, fstype)
	}
	err = probe()
	switch {
	case err == nil:
		return fuseAlive, nil
	case errors.Is(err, errProbeTimeout):
		return fuseUnresponsive, nil
	default:
		klog.V(2).InfoS("fuse: rbd-fuse mount does not serve the image", "file", p.file, "err", err)
		return fuseDead, nil
	}
}

// ensureLoop returns the loop device over the image file, attaching one if
// there is none.
func (f *fuse) ensureLoop(ctx context.Context, img Image, p fusePaths, readOnly bool) (Device, error) {
	loops, err := loopsBacking(f.cfg.SysfsRoot, p.file)
	if err != nil {
		return Device{}, fmt.Errorf("%w: listing loop devices: %v", ErrMapFailed, err)
	}
	if len(loops) > 0 {
		if ro, known := blockReadOnly(f.cfg.SysfsRoot, loops[0]); known && ro != readOnly {
			return Device{}, fmt.Errorf("%w: %s is already attached at %s with read-only=%t, requested read-only=%t; unstage the other user first",
				ErrMappingConflict, img.Spec(), loops[0], ro, readOnly)
		}
		return fuseDevice(img, loops[0], readOnly), nil
	}
	dev, err := f.attachLoop(ctx, p.file, readOnly)
	if err != nil {
		return Device{}, fmt.Errorf("%w: attaching a loop device to %s: %v", ErrMapFailed, p.file, err)
	}
	klog.InfoS("fuse: mapped image", "image", img.Spec(), "device", dev, "readOnly", readOnly)
	return fuseDevice(img, dev, readOnly), nil
}

// attachLoop attaches a loop device to file with ioctls (loop_sys.go),
// and with losetup where that fails other than by the deadline.
func (f *fuse) attachLoop(ctx context.Context, file string, readOnly bool) (string, error) {
	dev, err := attachLoopSys(ctx, f.cfg.DevRoot, file, readOnly)
	switch {
	case err == nil:
		return dev, nil
	case ctx.Err() != nil:
		return "", err
	}
	klog.V(2).InfoS("fuse: attaching the loop device with losetup instead", "file", file, "err", err)
	return attachLoop(ctx, f.cfg.Exec, f.cfg.LosetupPath, file, readOnly)
}

func fuseDevice(img Image, dev string, readOnly bool) Device {
	return Device{
		Path:   dev,
		Mapper: Fuse,
		Attrs: map[string]string{
			AttrPool:     img.Pool,
			AttrImage:    img.Name,
			AttrReadOnly: strconv.FormatBool(readOnly),
		},
	}
}

// startRBDFuse starts rbd-fuse for the image and waits until it serves the
// image file, i.e. until it has connected (and read the keyring, which is
// then deleted).
func (f *fuse) startRBDFuse(ctx context.Context, img Image, p fusePaths, proceed func() error) (err error) {
	if err := os.MkdirAll(p.mnt, 0o700); err != nil {
		return fmt.Errorf("%w: creating %s: %v", ErrMapFailed, p.mnt, err)
	}
	if err := atomicfile.WriteVolatile(p.conf, []byte(fuseConf(ctx, img)), 0o600); err != nil {
		return fmt.Errorf("%w: writing %s: %v", ErrMapFailed, p.conf, err)
	}
	if err := recordFuseCluster(p, img); err != nil {
		return err
	}
	kr, err := writeTempKeyring(f.cfg.SecretDir, img.User, img.Key)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	defer kr.Remove()
	proc, err := f.spawn(img, p, kr.Path)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.abortStart(ctx, img, p, proc.pid)
		}
	}()
	// rbd-fuse connects and mounts first, and opens the image at the first
	// lookup of its file, which waitServing makes.
	if err := proceed(); err != nil {
		return err
	}
	return f.waitServing(ctx, img, p, proc)
}

// recordFuseCluster notes which cluster the rbd-fuse about to start serves:
// the state directory is keyed by pool and image only, which two clusters
// may share.
func recordFuseCluster(p fusePaths, img Image) error {
	if img.ClusterFSID == "" {
		if err := os.Remove(p.cluster); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: removing %s: %v", ErrMapFailed, p.cluster, err)
		}
		return nil
	}
	// volatile: it describes a running rbd-fuse, which a reboot ends
	if err := atomicfile.WriteVolatile(p.cluster, []byte(strings.ToLower(img.ClusterFSID)+"\n"), 0o600); err != nil {
		return fmt.Errorf("%w: %v", ErrMapFailed, err)
	}
	return nil
}

// checkFuseCluster refuses to take a running rbd-fuse of the same pool and
// image for img's when it serves another cluster. Without an fsid on either
// side (mappings made before fsids were recorded) it matches, as before.
func checkFuseCluster(p fusePaths, img Image) error {
	b, err := os.ReadFile(p.cluster)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: reading %s: %v", ErrMapFailed, p.cluster, err)
	}
	if got := strings.TrimSpace(string(b)); !sameCluster(got, img.ClusterFSID) {
		return fmt.Errorf("%w: %s of cluster %s is already mapped on this node through rbd-fuse, and %s of cluster %s has the same pool and image names; "+
			"the fuse mapper keeps one per pool and image: unstage the other, or use StorageClass parameter mounter: krbd or rbd-nbd for one of the clusters",
			ErrMappingConflict, img.Spec(), got, img.Spec(), img.ClusterFSID)
	}
	return nil
}

// fuseConf is rbd-fuse's ceph.conf. It holds no secret: the keyring path
// comes through CEPH_ARGS and the file is deleted after connecting.
// librbd's cache is off: with it, a fenced (blocklisted) rbd-fuse took
// writes into the cache and blocked its writers' fsync, and with them every
// sync(2) on the node, instead of failing them; without it they fail with
// EIO at once (measured by the chaos scenario node-partitioned).
func fuseConf(ctx context.Context, img Image) string {
	// Bound rados_connect by our deadline so that a cluster that cannot be
	// reached fails rbd-fuse instead of leaving it hanging (default 300 s).
	mountTimeout := 30
	if dl, ok := ctx.Deadline(); ok {
		mountTimeout = max(5, int(time.Until(dl).Seconds()))
	}
	return fmt.Sprintf("[global]\nmon_host = %s\nclient_mount_timeout = %d\n"+
		"# no admin socket: its path could exceed the unix socket limit\nadmin_socket =\n"+
		"log_to_stderr = true\nerr_to_stderr = true\nrbd_cache = false\n",
		strings.Join(img.Monitors, ","), mountTimeout)
}

// fuseProc is an rbd-fuse this plugin process started.
type fuseProc struct {
	pid      int
	exited   chan struct{} // closed when the process has been reaped
	exitCode int           // valid once exited is closed
}

// spawn starts rbd-fuse in its own session with output to the log file.
// The process is reaped by this plugin process as long as it runs.
func (f *fuse) spawn(img Image, p fusePaths, keyring string) (*fuseProc, error) {
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %v", ErrMapFailed, p.log, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "%s%s starting rbd-fuse for %s\n", logMarker, time.Now().UTC().Format(time.RFC3339), img.Spec())
	// The long option forms cannot be mistaken for other options whatever
	// the names are; the mountpoint stays last (isRBDFuseFor relies on it).
	cmd := exec.Command(f.cfg.RBDFusePath, "-f", "-c", p.conf,
		"--poolname="+img.Pool, "--image="+img.Name, p.mnt)
	// librados reads CEPH_ARGS (rados_conf_parse_env): the user and the
	// keyring path go there, the key itself only into the keyring file.
	cmd.Env = commandEnv([]string{"CEPH_ARGS=--id " + img.User + " --keyring " + keyring})
	cmd.Stdout, cmd.Stderr = logf, logf
	// A new session: signals to the plugin's process group (or its exit)
	// do not reach rbd-fuse, which must outlive a plugin restart.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: starting %s: %v", ErrMapFailed, f.cfg.RBDFusePath, err)
	}
	proc := &fuseProc{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		proc.exitCode = cmd.ProcessState.ExitCode()
		close(proc.exited)
	}()
	if err := atomicfile.WriteVolatile(p.pid, []byte(strconv.Itoa(proc.pid)+"\n"), 0o600); err != nil {
		klog.ErrorS(err, "fuse: cannot write pid file", "file", p.pid)
	}
	return proc, nil
}

// waitServing waits until rbd-fuse is mounted and serves the image file.
func (f *fuse) waitServing(ctx context.Context, img Image, p fusePaths, proc *fuseProc) error {
	mounts := watchMountTable(f.mountinfo)
	defer mounts.Close()
	for poll := pollMin; ; poll = min(2*poll, pollMax) {
		select {
		case <-proc.exited:
			return f.startFailure(img, p, proc)
		case <-ctx.Done():
			return fmt.Errorf("%w: rbd-fuse did not serve %s before the deadline; see %s: %s", ErrMapTimeout, img.Spec(), p.log, tail(readLogTail(p.log, 2048), 600))
		default:
		}
		fstype, err := mountAt(f.mountinfo, p.mnt)
		if err != nil || fstype != fuseFSType {
			mounts.wait(poll)
			continue
		}
		// The first request waits for rbd-fuse to connect to the cluster.
		err = f.probes.stat(ctx, p.file, time.Until(deadlineOf(ctx)))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errProbeTimeout):
			mounts.wait(poll)
			continue // the loop reports the deadline
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%w: rbd-fuse connected but pool %s has no image %s", ErrImageNotFound, img.Pool, img.Name)
		case isDeadFuse(err):
			// rbd-fuse died while connecting; exited reports why.
			select {
			case <-proc.exited:
			case <-time.After(time.Second):
			}
			return f.startFailure(img, p, proc)
		default:
			return fmt.Errorf("%w: reading %s: %v", ErrMapFailed, p.file, err)
		}
	}
}

func deadlineOf(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(DefaultTimeout)
}

// startFailure explains why rbd-fuse exited during start-up, from its log
// and exit code (1: config fetch failed, 90: cannot connect, 91: cannot
// open the pool).
func (f *fuse) startFailure(img Image, p fusePaths, proc *fuseProc) error {
	code := -1
	select {
	case <-proc.exited:
		code = proc.exitCode
	default:
	}
	logTail := tail(readLogTail(p.log, 2048), 600)
	msg := fmt.Sprintf("rbd-fuse for %s exited with code %d (log %s): %s", img.Spec(), code, p.log, logTail)
	switch {
	case containsAny(logTail, "timed out"):
		return fmt.Errorf("%w: cannot reach the monitors %v: %s", ErrMapTimeout, img.Monitors, msg)
	// rbd-fuse fetches its config from the monitors before mounting; when
	// that fails without a timeout the monitors answered and refused the
	// credentials (at default log levels nothing more specific is printed).
	case containsAny(logTail, "Operation not permitted", "Permission denied", "failed to fetch mon config"):
		return fmt.Errorf("%w: the monitors refused client.%s (wrong key, or the user lacks caps such as mon 'profile rbd'): %s", ErrAccessDenied, img.User, msg)
	case code == 91:
		return fmt.Errorf("%w: pool %s does not exist or client.%s may not use it: %s", ErrImageNotFound, img.Pool, img.User, msg)
	default:
		return fmt.Errorf("%w: %s", ErrMapFailed, msg)
	}
}

// logMarker starts the line the mapper writes into the rbd-fuse log
// before each start.
const logMarker = "=== rbd-csi: "

// readLogTail returns the last n bytes of the rbd-fuse log. Only the
// output of the latest start is relevant, so it starts after the last
// marker line.
func readLogTail(path string, n int64) string {
	fh, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-n)
	buf := make([]byte, st.Size()-off)
	if _, err := fh.ReadAt(buf, off); err != nil {
		return ""
	}
	s := string(buf)
	if i := strings.LastIndex(s, logMarker); i >= 0 {
		if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
			s = s[i+j+1:]
		}
	}
	return s
}

// abortStart undoes a failed start: kill rbd-fuse, unmount, forget it.
func (f *fuse) abortStart(ctx context.Context, img Image, p fusePaths, pid int) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err := f.unmountFuse(p.mnt, true); err != nil {
		klog.ErrorS(err, "fuse: cleanup after failed start", "image", img.Spec())
	}
	waitGone(cctx, pid)
	_ = os.Remove(p.pid)
}

// unmountFuse unmounts the rbd-fuse mount (rbd-fuse then exits). Not
// mounted is success. A mount that stays busy is detached lazily: with no
// loop device left on it nothing we own holds it, and a dead daemon's
// mount must go for a new one to take its place. dead skips the retries:
// a dead mount held by a detaching loop device stays busy until that
// device's user lets go.
func (f *fuse) unmountFuse(mnt string, dead bool) error {
	tries := 20
	if dead {
		tries = 1
	}
	for i := 0; i < tries; i++ {
		fstype, err := mountAt(f.mountinfo, mnt)
		if err != nil {
			return err
		}
		if fstype == "" {
			return nil
		}
		err = syscall.Unmount(mnt, 0)
		switch {
		case err == nil, errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
			continue // re-check: mounts can be stacked
		case errors.Is(err, syscall.EBUSY):
			time.Sleep(100 * time.Millisecond)
		default:
			return fmt.Errorf("unmounting %s: %w", mnt, err)
		}
	}
	klog.InfoS("fuse: mount still busy, detaching lazily", "mountpoint", mnt)
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("lazily unmounting %s: %w", mnt, err)
	}
	return nil
}

// teardown detaches the loop devices on the image file, unmounts rbd-fuse
// and waits for it to exit. recovering is true when Map replaces a dead
// rbd-fuse: loop devices still mounted by a filesystem are then detached
// anyway (their backing connection is gone for good; the kernel frees them
// when the filesystem is unmounted), whereas Unmap refuses busy devices.
func (f *fuse) teardown(ctx context.Context, img Image, p fusePaths, recovering bool) error {
	loops, err := loopsBacking(f.cfg.SysfsRoot, p.file)
	if err != nil {
		return fmt.Errorf("%w: listing loop devices: %v", ErrUnmapFailed, err)
	}
	for _, dev := range loops {
		if err := f.detach(ctx, img, dev, recovering); err != nil {
			return err
		}
	}
	if !recovering {
		// losetup -d of a loop device that a process still holds open
		// (not mounted, not O_EXCL: the probe above cannot see it) only
		// sets autoclear. Stopping rbd-fuse now would fail that process's
		// I/O: refuse until it lets go; the kernel then frees the device.
		open, err := loopsStillOpen(f.cfg.SysfsRoot, p.file)
		if err != nil {
			return fmt.Errorf("%w: listing loop devices: %v", ErrUnmapFailed, err)
		}
		if len(open) > 0 {
			return fmt.Errorf("%w: %s (%s) is still in use (held open by a process); stop it first (the device was detached and goes away once closed)", ErrDeviceBusy, strings.Join(open, ", "), img.Spec())
		}
	}
	pid, hasPid := readPidFile(p.pid)
	if err := f.unmountFuse(p.mnt, recovering); err != nil {
		return fmt.Errorf("%w: %v", ErrUnmapFailed, err)
	}
	if hasPid {
		if err := stopRBDFuse(ctx, pid, p.mnt); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUnmapFailed, img.Spec(), err)
		}
	}
	_ = os.Remove(p.pid)
	return nil
}

func (f *fuse) detach(ctx context.Context, img Image, dev string, recovering bool) error {
	busy, err := blockDeviceBusy(filepath.Join(f.cfg.DevRoot, filepath.Base(dev)))
	if err != nil {
		klog.V(2).InfoS("fuse: cannot probe loop device", "device", dev, "err", err)
	}
	if busy && !recovering {
		return fmt.Errorf("%w: %s (%s) is still in use (mounted or held open); unmount it first", ErrDeviceBusy, dev, img.Spec())
	}
	if busy {
		klog.InfoS("fuse: detaching a loop device still in use whose rbd-fuse died; its filesystem must be remounted", "device", dev, "image", img.Spec())
	}
	if err := detachLoop(ctx, f.cfg.Exec, f.cfg.LosetupPath, f.cfg.SysfsRoot, dev); err != nil {
		return fmt.Errorf("%w: detaching %s (%s): %v", ErrUnmapFailed, dev, img.Spec(), err)
	}
	return nil
}

// Unmap implements Mapper.
func (f *fuse) Unmap(ctx context.Context, dev Device) error {
	ctx, cancel := withDeadline(ctx, f.cfg.DefaultTimeout)
	defer cancel()
	img, p, unlock, err := f.lockDevice(ctx, dev, ErrUnmapFailed)
	if err != nil {
		return err
	}
	defer unlock()
	// A device path that no longer backs our file (detached, or reused by
	// someone else) is left alone; teardown works from the file.
	if err := f.teardown(ctx, img, p, false); err != nil {
		return err
	}
	if err := f.removeState(p); err != nil {
		return err
	}
	klog.InfoS("fuse: unmapped image", "image", img.Spec(), "device", dev.Path)
	return nil
}

// removeState deletes the image's state directory. The mountpoint is
// removed with rmdir only, never recursively: were rbd-fuse still mounted
// there, a recursive delete would unlink the image file, which rbd-fuse
// turns into deleting the RBD image.
func (f *fuse) removeState(p fusePaths) error {
	if fstype, err := mountAt(f.mountinfo, p.mnt); err != nil || fstype != "" {
		return fmt.Errorf("%w: %s is still mounted (%q) after unmount: %v", ErrUnmapFailed, p.mnt, fstype, err)
	}
	// ".tmp" files are what a crashed older version left behind.
	files := []string{p.pid, p.conf, p.conf + ".tmp", p.pid + ".tmp", p.log, p.cluster}
	temps, _ := filepath.Glob(filepath.Join(p.dir, atomicfile.TempPrefix+"*"))
	for _, file := range append(files, temps...) {
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: removing %s: %v", ErrUnmapFailed, file, err)
		}
	}
	for _, dir := range []string{p.mnt, p.dir} {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: removing %s: %v", ErrUnmapFailed, dir, err)
		}
	}
	// The pool directory stays: removing it could race with a concurrent
	// Map of another image of the pool creating its directory in it.
	return nil
}

// Check implements Mapper.
func (f *fuse) Check(ctx context.Context, dev Device) (bool, string) {
	img, err := deviceImage(dev, Fuse, loopDevRe, "a loop device")
	if err != nil {
		return false, err.Error()
	}
	p := f.paths(img.Pool, img.Name)
	state, err := f.ping(ctx, p)
	switch {
	case err != nil:
		return false, err.Error()
	case state == fuseAbsent:
		return false, fmt.Sprintf("the rbd-fuse mount for %s is gone; the volume must be staged again", img.Spec())
	case state == fuseDead:
		return false, fmt.Sprintf("the rbd-fuse process for %s died (see %s); I/O on %s fails until the volume is staged again", img.Spec(), p.log, dev.Path)
	case state == fuseUnresponsive:
		return false, fmt.Sprintf("rbd-fuse for %s does not answer within %s (stopped or stuck?); see %s", img.Spec(), probeTimeout, p.log)
	}
	if got := loopBackingFile(f.cfg.SysfsRoot, dev.Path); got != p.file || loopDetaching(f.cfg.SysfsRoot, dev.Path) {
		return false, fmt.Sprintf("%s no longer backs %s (backing file %q, or detached after rbd-fuse was replaced); the volume must be staged again", dev.Path, img.Spec(), got)
	}
	return true, ""
}

// lockDevice locks the image behind dev; a lock not taken in time is
// wrapped in lockErr, the sentinel the caller's operation fails with.
func (f *fuse) lockDevice(ctx context.Context, dev Device, lockErr error) (Image, fusePaths, func(), error) {
	img, err := deviceImage(dev, Fuse, loopDevRe, "a loop device")
	if err != nil {
		return Image{}, fusePaths{}, nil, err
	}
	p := f.paths(img.Pool, img.Name)
	unlock, err := f.lock(ctx, img.Spec(), p.lock)
	if err != nil {
		return Image{}, fusePaths{}, nil, fmt.Errorf("%w: %w", lockErr, err)
	}
	return img, p, unlock, nil
}

// lock serialises work on one image across goroutines (keylock) and
// across processes (flock), e.g. an old and a new plugin instance during
// an upgrade.
func (f *fuse) lock(ctx context.Context, key, path string) (func(), error) {
	unlockMem, err := f.locks.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	unlockFile, err := flockFile(ctx, path)
	if err != nil {
		unlockMem()
		return nil, err
	}
	return func() { unlockFile(); unlockMem() }, nil
}

// flockFile takes an exclusive flock on path, polling so that ctx bounds
// the wait.
func flockFile(ctx context.Context, path string) (func(), error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = fh.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			fh.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			fh.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
