// Package mapper turns an RBD image into a local block device for the node
// plugin. Three implementations sit behind the Mapper interface:
//
//   - "krbd": the kernel rbd driver, driven through /sys/bus/rbd. It runs no
//     command at all; the cephx key goes straight from memory into the sysfs
//     write, so it never appears in any process' arguments.
//   - "rbd-nbd": userspace librbd exported through the kernel nbd driver by
//     the rbd-nbd tool; supports every image feature.
//   - "fuse": userspace librbd exported as a file by one rbd-fuse process per
//     image, then turned into a block device with a loop device. This is the
//     path for kernels that have neither rbd nor nbd.
//
// Secrets: Image.Key is never logged, never put into process arguments or
// error messages, and never left in a file once a call returns (userspace
// mappers get it through a 0600 keyring file in a private 0700 directory
// that is removed as soon as the tool has read it).
//
// Deadlines: every external command and every potentially blocking sysfs or
// FUSE access runs under the caller's context; a context without a deadline
// gets Config.DefaultTimeout.
//
// Errors are wrapped around the sentinel errors in errors.go; use errors.Is
// to classify them.
package mapper

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Mapper names accepted by New.
const (
	KRBD   = "krbd"
	RBDNBD = "rbd-nbd"
	Fuse   = "fuse"
)

// DefaultTimeout bounds an operation whose context carries no deadline.
const DefaultTimeout = 2 * time.Minute

// DefaultNBDReattachTimeout is Config.NBDReattachTimeout's default: long
// enough for a plugin container restart with the kubelet's back-off
// (rbd-nbd's own default, 30 s, is not), short enough that an application
// whose device will never be served again fails within minutes.
const DefaultNBDReattachTimeout = 5 * time.Minute

// Image identifies an RBD image and how to reach it.
//
// Key is a cephx secret: it is never logged, never put into process
// arguments or errors, and never left in a file after a call returns.
type Image struct {
	// Monitors are addresses as ceph.ParseMonitor accepts them; krbd leaves
	// out those pinned (v1:/v2:) to a protocol the kernel will not speak.
	Monitors []string
	// User is the cephx user without the "client." prefix.
	User string
	// Key is the user's base64 cephx secret. Surrounding whitespace is
	// trimmed; anything but the base64 alphabet (a line break inside the
	// key, say) is refused, as is a key longer than 256 bytes.
	Key string
	// Pool, RadosNamespace (may be empty) and Name locate the image.
	Pool, RadosNamespace, Name string
	// Features are the image's feature bits, read by the caller from
	// librbd. krbd refuses images with features the kernel does not support.
	Features ceph.Features
	// ClusterFSID optionally names the cluster (its fsid UUID). When set,
	// krbd only treats an existing mapping as this image's if the kernel
	// reports the same cluster_fsid, which matters when a node mounts
	// images from two clusters with identical pool and image names.
	ClusterFSID string
}

// sameCluster is the one rule by which every mapper matches an existing
// mapping's cluster fsid with Image.ClusterFSID. Either may be unknown
// (""): a mapping made before fsids were recorded, or a caller without
// one, matches by pool, namespace and image alone, as before.
func sameCluster(a, b string) bool {
	return a == "" || b == "" || strings.EqualFold(a, b)
}

// Spec returns "pool/[namespace/]image", the usual rbd image spec. It
// contains no secret and is safe to log.
func (img Image) Spec() string {
	if img.RadosNamespace == "" {
		return img.Pool + "/" + img.Name
	}
	return img.Pool + "/" + img.RadosNamespace + "/" + img.Name
}

// MapOptions tune one Map call.
type MapOptions struct {
	// ReadOnly maps the device read-only.
	ReadOnly bool
	// Extra is the StorageClass's comma-separated map options for the
	// chosen mapper (krbd: kernel rbd/libceph options such as
	// "queue_depth=256,notrim"; rbd-nbd: "io-timeout=30,exclusive"; fuse:
	// none). It is validated against an allowlist; see ValidateMapOptions.
	Extra string
	// Previous, when set, is the Device an earlier Map of the same image
	// returned (read back from the caller's stage-state file). rbd-nbd uses
	// it to re-attach a new rbd-nbd process to the existing nbd device
	// after the old process died with the plugin, so that a filesystem
	// mounted on it survives. Other mappers find their mapping without it.
	Previous *Device
	// Proceed, when set, is the caller's last word before the image is
	// opened: the map calls it once, before anything of its own opens the
	// image or takes over a mapping that has it open, and gives up (undoing
	// what it set up) with its error, returned unwrapped. It lets a check
	// of the image's other clients run beside the map's set-up without
	// ever seeing this map's own client. The fuse mapper calls it once
	// rbd-fuse is started (rbd-fuse opens an image only when asked for
	// it), the others before mapping.
	Proceed func() error
}

// proceed calls o.Proceed when it is set.
func (o MapOptions) proceed() error {
	if o.Proceed == nil {
		return nil
	}
	return o.Proceed()
}

// Device is a mapped image.
type Device struct {
	// Path is the block device: /dev/rbd0, /dev/nbd0, /dev/loop3.
	Path string `json:"path"`
	// Mapper is the Name() of the mapper that made it.
	Mapper string `json:"mapper"`
	// Attrs is what Unmap, Check and re-attach need. The caller persists it
	// (JSON stage-state file); it never contains secrets.
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Keys of Device.Attrs.
const (
	AttrPool      = "pool"
	AttrNamespace = "namespace"
	AttrImage     = "image"
	// AttrDevID is the krbd device id (N of /dev/rbdN).
	AttrDevID = "id"
	// AttrCookie is the rbd-nbd device cookie used to re-attach.
	AttrCookie = "cookie"
	// AttrReadOnly is "true" when the device was mapped read-only.
	AttrReadOnly = "readonly"
)

// Mapper turns RBD images into local block devices.
type Mapper interface {
	// Name returns the mapper's name as accepted by New.
	Name() string
	// Map makes the image a local block device. It is idempotent: an image
	// already mapped by this mapper returns the existing device (also after
	// the plugin restarted, i.e. from a new Mapper value).
	Map(ctx context.Context, img Image, opts MapOptions) (Device, error)
	// Unmap removes the device. It is idempotent: an already unmapped
	// device is success. A device still in use (mounted, held open) fails
	// with ErrDeviceBusy and is left alone. A Device that names only the
	// image (Mapper and the pool/namespace/image Attrs, no Path), as a
	// caller has after crashing between Map and recording its result, is
	// accepted: the mapper then finds the image's mapping itself.
	Unmap(ctx context.Context, dev Device) error
	// Check reports whether a previously returned Device is still healthy
	// (for the NodeGetVolumeStats volume condition), with a message an
	// operator can act on when it is not.
	Check(ctx context.Context, dev Device) (healthy bool, msg string)
}

// Refresher is implemented by mappers whose device does not follow an
// image resize by itself (fuse: a loop device keeps its size until
// `losetup -c`; krbd and rbd-nbd follow librbd's resize notification).
// Refresh is idempotent and bounded by ctx.
type Refresher interface {
	Refresh(ctx context.Context, dev Device) error
}

// ReattachResult says what Reattach found and did.
type ReattachResult int

// Reattach results.
const (
	// ReattachLive: a live process serves the device; nothing was done.
	ReattachLive ReattachResult = iota
	// Reattached: the device had lost its process and a new one serves it
	// now; I/O queued in the kernel meanwhile resumes.
	Reattached
	// ReattachGone: the device is no longer connected (the kernel's wait
	// for a new process expired, or it was unmapped): I/O on it fails and
	// only a new stage helps.
	ReattachGone
	// ReattachOther: the device now belongs to another image or cluster
	// (or the image is served from another device); it was left alone.
	ReattachOther
)

func (r ReattachResult) String() string {
	switch r {
	case ReattachLive:
		return "live"
	case Reattached:
		return "reattached"
	case ReattachGone:
		return "gone"
	case ReattachOther:
		return "other"
	}
	return fmt.Sprintf("ReattachResult(%d)", int(r))
}

// Reattacher is implemented by mappers whose device outlives the process
// serving it (rbd-nbd: the kernel keeps an nbd device and queues its I/O
// for the reattach timeout after the daemon died). Reattach serves dev, a
// Device an earlier Map of img returned, again when its process died; it
// never maps anew and never touches a device of another image or cluster.
// It is idempotent: a device served again is ReattachLive.
type Reattacher interface {
	Reattach(ctx context.Context, img Image, opts MapOptions, dev Device) (ReattachResult, error)
}

// ForceUnmapper is implemented by mappers that can tear a mapping down while
// it is still open (krbd "force"): in-flight I/O is failed and every later
// I/O on the device fails. Only for callers that know the device's users
// are gone for good; a mounted filesystem on it will see I/O errors.
type ForceUnmapper interface {
	ForceUnmap(ctx context.Context, dev Device) error
}

// Config configures the mappers. The zero value works for krbd and
// rbd-nbd on a real node; fuse needs StateDir.
type Config struct {
	// SysfsRoot is where sysfs is mounted ("/sys" when empty). Tests point
	// it at a fake tree.
	SysfsRoot string
	// DevRoot is the device directory ("/dev" when empty).
	DevRoot string
	// ProcRoot is where procfs is mounted ("/proc" when empty), read for
	// the command line of the rbd-nbd process serving a device.
	ProcRoot string
	// StateDir holds the fuse mapper's per-image state: mountpoints, pid
	// files, logs. It must survive plugin restarts (a hostPath) and is
	// required for "fuse".
	StateDir string
	// SecretDir is where short-lived keyring files are created, each in its
	// own 0700 directory, removed when the map call returns. Use a private
	// tmpfs so keys never reach a disk nor the host's /dev/shm; sweep it
	// with PrepareKeyringDir at start-up. Empty: DefaultKeyringDir.
	SecretDir string
	// CephConf is an optional ceph.conf passed to rbd-nbd (-c) for extra
	// client settings. Monitors and credentials always come from Image.
	CephConf string
	// Exec runs external commands (nil: the OS).
	Exec Executor
	// KernelLog reads kernel messages for krbd failure diagnosis
	// (nil: /dev/kmsg).
	KernelLog KernelLog
	// Resolver resolves monitor host names for krbd, which needs IP
	// addresses (nil: net.DefaultResolver).
	Resolver Resolver
	// DefaultTimeout bounds calls whose context has no deadline
	// (0: DefaultTimeout).
	DefaultTimeout time.Duration
	// NBDReattachTimeout is how long the kernel keeps an rbd-nbd device,
	// queuing its I/O, after the rbd-nbd process serving it died (the
	// plugin's container restarted): rbd-nbd's --reattach-timeout, given
	// at map and re-attach unless the StorageClass's map options set
	// reattach-timeout. Whole seconds up to an hour
	// (0: DefaultNBDReattachTimeout).
	NBDReattachTimeout time.Duration
	// RBDNBDPath, RBDFusePath and LosetupPath name the binaries ("rbd-nbd",
	// "rbd-fuse", "losetup" looked up in PATH when empty).
	RBDNBDPath, RBDFusePath, LosetupPath string
}

func (c Config) withDefaults() Config {
	if c.SysfsRoot == "" {
		c.SysfsRoot = "/sys"
	}
	if c.DevRoot == "" {
		c.DevRoot = "/dev"
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.SecretDir == "" {
		c.SecretDir = DefaultKeyringDir
	}
	if c.Exec == nil {
		c.Exec = OSExecutor{}
	}
	if c.KernelLog == nil {
		c.KernelLog = KmsgLog{}
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.NBDReattachTimeout == 0 {
		c.NBDReattachTimeout = DefaultNBDReattachTimeout
	}
	if c.RBDNBDPath == "" {
		c.RBDNBDPath = "rbd-nbd"
	}
	if c.RBDFusePath == "" {
		c.RBDFusePath = "rbd-fuse"
	}
	if c.LosetupPath == "" {
		c.LosetupPath = "losetup"
	}
	return c
}

// New returns the mapper called name ("krbd", "rbd-nbd" or "fuse").
func New(name string, cfg Config) (Mapper, error) {
	cfg = cfg.withDefaults()
	switch name {
	case KRBD:
		return newKRBD(cfg), nil
	case RBDNBD:
		return newNBD(cfg)
	case Fuse:
		return newFuse(cfg)
	default:
		return nil, fmt.Errorf("%w: unknown mapper %q (want one of %v)", ErrInvalidOptions, name, Names())
	}
}

// Names lists the mapper names New accepts, the default (krbd) first.
func Names() []string {
	return []string{KRBD, RBDNBD, Fuse}
}

// withDeadline gives ctx a deadline when it has none, so that nothing this
// package starts can block forever.
func withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// cleanAbs returns an absolute, symlink-free form of dir (which must exist),
// because the kernel reports loop backing files and mountpoints that way.
func cleanAbs(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}
