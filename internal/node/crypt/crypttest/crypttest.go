// Package crypttest simulates cryptsetup and the kernel's device-mapper for
// unit tests of package crypt and of the node service: a Kernel is a
// mapper.Executor answering cryptsetup as the real one does, with opened
// devices as files under a temporary /dev/mapper. It checks what the real
// tool would: the passphrase of open against the one of luksFormat.
package crypttest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// Kernel is a simulated node with dm-crypt.
type Kernel struct {
	Dir string // root of the fake /dev and /sys

	mu      sync.Mutex
	luks    map[string]string // device -> passphrase of its LUKS header
	backing map[string]string // opened name -> device
	calls   []mapper.Command
	stdins  [][]byte
	// Other answers the prober for devices without LUKS ("" = none).
	Other map[string]string
	// Busy makes that many closes of a name fail as in use (-1: all).
	Busy map[string]int
}

// New returns a Kernel with device-mapper and dm-crypt present.
func New(t *testing.T) *Kernel {
	t.Helper()
	k := &Kernel{Dir: t.TempDir(), luks: map[string]string{}, backing: map[string]string{}, Other: map[string]string{}, Busy: map[string]int{}}
	for _, d := range []string{"dev/mapper", "sys/module/dm_crypt", "modules"} {
		if err := os.MkdirAll(filepath.Join(k.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(k.Dir, "dev/mapper/control"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// Config is a crypt.Config running on k.
func (k *Kernel) Config() crypt.Config {
	return crypt.Config{Exec: k, Probe: k, DevDir: filepath.Join(k.Dir, "dev"), SysDir: filepath.Join(k.Dir, "sys"), ModulesDir: filepath.Join(k.Dir, "modules")}
}

// RemoveDMCrypt takes dm-crypt away (and device-mapper too with dm).
func (k *Kernel) RemoveDMCrypt(t *testing.T, dm bool) {
	t.Helper()
	_ = os.RemoveAll(filepath.Join(k.Dir, "sys/module/dm_crypt"))
	if dm {
		_ = os.Remove(filepath.Join(k.Dir, "dev/mapper/control"))
	}
}

// Formatted reports whether dev has a LUKS header.
func (k *Kernel) Formatted(dev string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.luks[dev]
	return ok
}

// Open reports the device name is open over, "" when closed.
func (k *Kernel) Open(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.backing[name]
}

// Calls returns the commands run, with what each got on stdin.
func (k *Kernel) Calls() ([]mapper.Command, [][]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls), slices.Clone(k.stdins)
}

// Format implements crypt.Prober.
func (k *Kernel) Format(_ context.Context, dev string) (string, error) {
	if k.Formatted(dev) {
		return "crypto_LUKS", nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Other[dev], nil
}

var errExit = errors.New("exit status 1")

// Run implements mapper.Executor.
func (k *Kernel) Run(_ context.Context, c mapper.Command) ([]byte, []byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, mapper.Command{Path: c.Path, Args: slices.Clone(c.Args)})
	k.stdins = append(k.stdins, slices.Clone(c.Stdin))
	if filepath.Base(c.Path) == "modprobe" {
		return nil, []byte("modprobe: FATAL: Module dm_crypt not found"), errExit
	}
	args := c.Args
	if len(args) == 0 {
		return nil, []byte("usage"), errExit
	}
	last := args[len(args)-1]
	switch args[0] {
	case "--version":
		return []byte("cryptsetup 2.6.1 flags: UDEV BLKID KEYRING"), nil, nil
	case "luksFormat":
		if len(c.Stdin) == 0 {
			return nil, []byte("No passphrase"), errExit
		}
		k.luks[last] = string(c.Stdin)
		return nil, nil, nil
	case "open":
		dev, name := args[len(args)-2], last
		if pass, ok := k.luks[dev]; !ok || pass != string(c.Stdin) {
			return nil, []byte("No key available with this passphrase."), errExit
		}
		k.backing[name] = dev
		return nil, nil, os.WriteFile(filepath.Join(k.Dir, "dev/mapper", name), nil, 0o600)
	case "status":
		dev, ok := k.backing[last]
		if !ok {
			return nil, nil, errExit
		}
		return []byte("/dev/mapper/" + last + " is active.\n  type:    LUKS2\n  device:  " + dev + "\n"), nil, nil
	case "close":
		if n := k.Busy[last]; n != 0 {
			k.Busy[last] = n - 1
			return nil, []byte("Device " + last + " is still in use."), errExit
		}
		delete(k.backing, last)
		return nil, nil, os.Remove(filepath.Join(k.Dir, "dev/mapper", last))
	case "resize":
		if _, ok := k.backing[last]; !ok {
			return nil, []byte("Device " + last + " not found"), errExit
		}
		return nil, nil, nil
	}
	return nil, []byte("unknown action " + strings.Join(args, " ")), errExit
}
