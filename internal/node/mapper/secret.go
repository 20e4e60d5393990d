package mapper

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tempKeyring is a keyring file holding one cephx key, in its own 0700
// directory, for a tool that only accepts keys from files. Remove must be
// called as soon as the tool has read it.
type tempKeyring struct {
	dir  string
	Path string
}

// writeTempKeyring creates the keyring under parent.
func writeTempKeyring(parent, user, key string) (*tempKeyring, error) {
	dir, err := os.MkdirTemp(parent, "rbd-csi-keyring-")
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
