// Package crypt opens the LUKS2 layer of encrypted volumes on the node with
// cryptsetup: format on the first stage of an empty image, open at stage,
// close at unstage, resize after an expansion. The passphrase reaches
// cryptsetup on stdin only (--key-file=-), never in its arguments or a
// file; every command runs under a deadline.
package crypt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
)

// Errors, matched with errors.Is.
var (
	// ErrNoDMCrypt: the node cannot open LUKS (kernel feature or tool missing).
	ErrNoDMCrypt = errors.New("encryption not supported on this node")
	// ErrNotEmpty: the image holds data that is not LUKS; it is never formatted.
	ErrNotEmpty = errors.New("image is neither empty nor LUKS")
	// ErrNotFormatted: a read-only stage of an image that was never formatted.
	ErrNotFormatted = errors.New("image has no LUKS header yet")
	// ErrBusy: the opened device is still in use.
	ErrBusy = errors.New("encrypted device in use")
)

// luksType is what blkid calls a LUKS header.
const luksType = "crypto_LUKS"

// headBytes is how much of an image without any signature must read as
// zeros for it to count as empty: raw data without a signature would
// otherwise be formatted over.
const headBytes = 1 << 20

// Prober finds the signature on a device ("" when none); mounter.Real's
// Format (blkid) is one.
type Prober interface {
	Format(ctx context.Context, dev string) (string, error)
}

// Config locates the tools and kernel interfaces; zero values are the
// system's.
type Config struct {
	Exec       mapper.Executor
	Probe      Prober
	Cryptsetup string // default "cryptsetup"
	Modprobe   string // default "modprobe"
	DevDir     string // default "/dev"
	SysDir     string // default "/sys"
	ModulesDir string // default "/lib/modules/<release>"
	// Timeout bounds each command (default 2 minutes).
	Timeout time.Duration
}

// Crypt runs cryptsetup for the node plugin.
type Crypt struct{ c Config }

// New fills in c's defaults.
func New(c Config) *Crypt {
	if c.Exec == nil {
		c.Exec = mapper.OSExecutor{}
	}
	if c.Cryptsetup == "" {
		c.Cryptsetup = "cryptsetup"
	}
	if c.Modprobe == "" {
		c.Modprobe = "modprobe"
	}
	if c.DevDir == "" {
		c.DevDir = "/dev"
	}
	if c.SysDir == "" {
		c.SysDir = "/sys"
	}
	if c.ModulesDir == "" {
		c.ModulesDir = filepath.Join("/lib/modules", kernelRelease())
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Minute
	}
	return &Crypt{c: c}
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// DeviceName is the device-mapper name of a volume's LUKS device: derived
// from the volume ID, so a restarted plugin finds the device it opened.
func DeviceName(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return "rbd-csi-" + hex.EncodeToString(sum[:12])
}

// Path is where the opened device of name appears.
func (c *Crypt) Path(name string) string { return filepath.Join(c.c.DevDir, "mapper", name) }

func (c *Crypt) run(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.c.Timeout)
	defer cancel()
	return mapper.RunTool(ctx, c.c.Exec, mapper.Command{Path: c.c.Cryptsetup, Args: args, Stdin: stdin})
}

// Check reports, as ErrNoDMCrypt naming what is missing, a node that
// cannot open LUKS: no device-mapper, no dm-crypt target, no cryptsetup.
// It loads dm_crypt when it is a module not loaded yet.
func (c *Crypt) Check(ctx context.Context) error {
	if !c.haveDM() || !c.haveDMCrypt() {
		mctx, cancel := context.WithTimeout(ctx, c.c.Timeout)
		_, _ = mapper.RunTool(mctx, c.c.Exec, mapper.Command{Path: c.c.Modprobe, Args: []string{"dm_crypt"}})
		cancel()
	}
	if !c.haveDM() {
		return fmt.Errorf("%w: the kernel has no device-mapper (CONFIG_BLK_DEV_DM, module dm_mod; %s does not exist): encrypted volumes need a node kernel with device-mapper and dm-crypt", ErrNoDMCrypt, filepath.Join(c.c.DevDir, "mapper", "control"))
	}
	if !c.haveDMCrypt() {
		return fmt.Errorf("%w: the kernel has no dm-crypt (CONFIG_DM_CRYPT, module dm_crypt; `modprobe dm_crypt` failed): encrypted volumes need it on the node", ErrNoDMCrypt)
	}
	if _, err := c.run(ctx, nil, "--version"); err != nil {
		return fmt.Errorf("%w: cryptsetup does not run in the node plugin (install cryptsetup-bin in its image): %v", ErrNoDMCrypt, err)
	}
	return nil
}

func (c *Crypt) haveDM() bool {
	_, err := os.Stat(filepath.Join(c.c.DevDir, "mapper", "control"))
	return err == nil
}

func (c *Crypt) haveDMCrypt() bool {
	if _, err := os.Stat(filepath.Join(c.c.SysDir, "module", "dm_crypt")); err == nil {
		return true
	}
	builtin, _ := os.ReadFile(filepath.Join(c.c.ModulesDir, "modules.builtin"))
	return bytes.Contains(builtin, []byte("/dm-crypt.ko"))
}

// Open opens dev's LUKS layer as name and returns the opened device's
// path. An image with no signature and only zeros at its start is
// formatted first (LUKS2); anything else that is not LUKS is ErrNotEmpty
// and left untouched. A device already open as name over dev (a plugin
// restarted mid-stage) is reused.
func (c *Crypt) Open(ctx context.Context, dev, name string, passphrase []byte, readOnly bool) (string, error) {
	reused, err := c.reuse(ctx, dev, name)
	if err != nil {
		return "", err
	}
	if reused {
		return c.Path(name), nil
	}
	found, err := c.c.Probe.Format(ctx, dev)
	if err != nil {
		return "", err
	}
	switch found {
	case luksType:
	case "":
		if err := c.format(ctx, dev, passphrase, readOnly); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("%w: %s holds %s: refusing to format it as LUKS (its data is left as it is); use a volume made by an encrypted StorageClass", ErrNotEmpty, dev, found)
	}
	args := []string{"open", "--type", "luks2", "--key-file=-", "--disable-keyring"}
	if readOnly {
		args = append(args, "--readonly")
	}
	if _, err := c.run(ctx, passphrase, append(args, dev, name)...); err != nil {
		return "", fmt.Errorf("open the LUKS layer of %s: %w", dev, err)
	}
	return c.Path(name), c.waitNode(ctx, name)
}

// reuse reports whether name is already open over dev; one open over
// another device (a stale mapping) is closed first.
func (c *Crypt) reuse(ctx context.Context, dev, name string) (bool, error) {
	if !c.active(name) {
		return false, nil
	}
	out, err := c.run(ctx, nil, "status", name)
	if err == nil && sameDevice(backingDevice(out), dev) {
		return true, nil
	}
	return false, c.Close(ctx, name)
}

func backingDevice(status string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "device:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func sameDevice(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return a == b || (err1 == nil && err2 == nil && ra == rb)
}

// format makes an empty image LUKS2. The passphrase is a random 256-bit
// key, so the key derivation needs no work factor: PBKDF2 at its minimum
// keeps a stage fast and light (argon2's default wants 1 GiB of memory).
func (c *Crypt) format(ctx context.Context, dev string, passphrase []byte, readOnly bool) error {
	if readOnly {
		return fmt.Errorf("%w: %s is empty and the volume is read-only, so it cannot be formatted: stage it read-write once first", ErrNotFormatted, dev)
	}
	if err := zeroHead(ctx, dev); err != nil {
		return err
	}
	_, err := c.run(ctx, passphrase, "luksFormat", "--batch-mode", "--type", "luks2",
		"--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file=-", dev)
	if err != nil {
		return fmt.Errorf("format %s as LUKS2: %w", dev, err)
	}
	return nil
}

// zeroHead refuses a device whose first headBytes are not all zeros.
func zeroHead(ctx context.Context, dev string) error {
	head, err := mounter.ReadStart(ctx, dev, headBytes)
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	if i := bytes.IndexFunc(head, func(r rune) bool { return r != 0 }); i >= 0 {
		return fmt.Errorf("%w: %s has no signature but holds data (a non-zero byte at offset %d): refusing to format it as LUKS (its data is left as it is)", ErrNotEmpty, dev, i)
	}
	return nil
}

// waitNode waits for the opened device's node (udev may create it a
// moment after cryptsetup returns).
func (c *Crypt) waitNode(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !c.active(name) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("opened %s but %s did not appear: %w", name, c.Path(name), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Active reports whether name is open.
func (c *Crypt) Active(name string) bool { return c.active(name) }

func (c *Crypt) active(name string) bool {
	_, err := os.Stat(c.Path(name))
	return err == nil
}

// busyRetry is how long Close retries a device in use: udev probes a
// device-mapper device for a moment after its filesystem is unmounted.
const busyRetry = 5 * time.Second

// Close closes name; one not open is success. A device still in use after
// busyRetry is ErrBusy.
func (c *Crypt) Close(ctx context.Context, name string) error {
	deadline := time.Now().Add(busyRetry)
	for {
		if !c.active(name) {
			return nil
		}
		_, err := c.run(ctx, nil, "close", name)
		if err == nil || !c.active(name) {
			return nil
		}
		if !strings.Contains(err.Error(), "in use") {
			return fmt.Errorf("close %s: %w", c.Path(name), err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w: close %s: %v; stop what still holds it", ErrBusy, c.Path(name), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Resize grows the opened device to its RBD device's size. It needs no
// passphrase: Open keeps the volume key in the dm table (--disable-keyring).
func (c *Crypt) Resize(ctx context.Context, name string) error {
	if _, err := c.run(ctx, nil, "resize", name); err != nil {
		return fmt.Errorf("resize %s: %w", c.Path(name), err)
	}
	return nil
}
