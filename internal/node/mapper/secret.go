package mapper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// DefaultKeyringDir is where short-lived keyring files go unless configured:
// private to the plugin, never the host's /dev/shm (the node pod mounts the
// host's /dev). The chart mounts an in-memory emptyDir here.
const DefaultKeyringDir = "/run/rbd-csi/keyrings"

// keyringPrefix names the per-call directories, so that the start-up sweep
// removes only what this package made.
const keyringPrefix = "rbd-csi-keyring-"

// PrepareKeyringDir creates dir (0700) and removes the keyrings a plugin
// killed during a map call left there. Call it once at start-up, before any
// map: a keyring of a call still running would go too.
func PrepareKeyringDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating keyring directory %s: %w", dir, err)
	}
	// MkdirAll keeps the mode of an existing directory.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("making keyring directory %s private: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading keyring directory %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), keyringPrefix) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Removed a keyring left by an interrupted map", "path", filepath.Join(dir, e.Name()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing leftover keyrings in %s: %w", dir, err)
	}
	return nil
}

// tempKeyring is a keyring file holding one cephx key, in its own 0700
// directory, for a tool that only accepts keys from files. Remove must be
// called as soon as the tool has read it.
type tempKeyring struct {
	dir  string
	Path string
}

// writeTempKeyring creates the keyring under parent.
func writeTempKeyring(parent, user, key string) (*tempKeyring, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("creating keyring directory %s: %w", parent, err)
	}
	dir, err := os.MkdirTemp(parent, keyringPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating private keyring directory in %s: %w", parent, err)
	}
	k := &tempKeyring{dir: dir, Path: filepath.Join(dir, "keyring")}
	if err := writeKeyringFile(k.Path, user, key); err != nil {
		k.Remove()
		return nil, err
	}
	return k, nil
}

func writeKeyringFile(path, user, key string) error {
	// O_EXCL: never write the key through a file someone planted there.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating keyring file: %w", err)
	}
	// user and key are validated (no newlines), so this cannot add lines.
	_, werr := fmt.Fprintf(f, "[client.%s]\n\tkey = %s\n", user, key)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		return fmt.Errorf("writing keyring file: %v %v", werr, cerr)
	}
	return nil
}

// Remove deletes the keyring and its directory. Safe to call twice and on
// nil.
func (k *tempKeyring) Remove() {
	if k == nil || k.dir == "" {
		return
	}
	_ = os.RemoveAll(k.dir)
	k.dir = ""
}

// redactedError hides a secret that might have slipped into an error text
// (e.g. a tool echoing its configuration) while keeping errors.Is working.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact returns err with every occurrence of secret replaced.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "<redacted>"), err: err}
}
