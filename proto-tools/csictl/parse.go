package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/internal/quantity"
)

var (
	errInvalidSize       = quantity.ErrInvalid
	errInvalidKV         = errors.New("invalid key=value pair")
	errInvalidEndpoint   = errors.New("invalid endpoint")
	errInvalidAccessMode = errors.New("invalid access mode")
)

// parseSize and formatSize are the shared byte-count rules.
func parseSize(s string) (int64, error) { return quantity.Parse(s) }

func formatSize(n int64) string { return quantity.Format(n) }

// parseKV splits "key=value" at the first '='. The key must be non-empty;
// the value may be empty and may itself contain '='.
func parseKV(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("%w %q: expected key=value", errInvalidKV, s)
	}
	if key == "" {
		return "", "", fmt.Errorf("%w %q: key is empty", errInvalidKV, s)
	}
	return key, value, nil
}

// parseEndpoint turns "unix:///abs", "unix:rel/or/abs" or a plain path
// into an absolute socket path.
func parseEndpoint(s string) (string, error) {
	path, err := endpointPath(s)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", errInvalidEndpoint, s, err)
	}
	return abs, nil
}

// endpointPath strips the unix scheme from s and rejects other schemes.
func endpointPath(s string) (string, error) {
	var path string
	switch {
	case s == "":
		return "", fmt.Errorf("%w: empty (set --endpoint or CSI_ENDPOINT)", errInvalidEndpoint)
	case strings.HasPrefix(s, "unix://"):
		path = strings.TrimPrefix(s, "unix://")
		if !strings.HasPrefix(path, "/") {
			return "", fmt.Errorf("%w %q: unix:// must be followed by an absolute path (unix:///path/csi.sock)", errInvalidEndpoint, s)
		}
	case strings.HasPrefix(s, "unix:"):
		path = strings.TrimPrefix(s, "unix:")
	case strings.Contains(s, "://"):
		return "", fmt.Errorf("%w %q: only unix sockets are supported (unix:///path or a plain path)", errInvalidEndpoint, s)
	default:
		path = s
	}
	if path == "" {
		return "", fmt.Errorf("%w %q: socket path is empty", errInvalidEndpoint, s)
	}
	return path, nil
}

// accessModes lists the accepted access mode names in CSI enum order.
var accessModes = []struct {
	name string
	mode csi.VolumeCapability_AccessMode_Mode
}{
	{"single-node-writer", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	{"single-node-reader-only", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY},
	{"multi-node-reader-only", csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
	{"multi-node-single-writer", csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER},
	{"multi-node-multi-writer", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	{"single-node-single-writer", csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
	{"single-node-multi-writer", csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER},
}

// parseAccessMode accepts the dashed names above case-insensitively, and
// also the CSI enum spelling (SINGLE_NODE_WRITER).
func parseAccessMode(s string) (csi.VolumeCapability_AccessMode_Mode, error) {
	norm := strings.ReplaceAll(strings.ToLower(s), "_", "-")
	for _, m := range accessModes {
		if m.name == norm {
			return m.mode, nil
		}
	}
	return 0, fmt.Errorf("%w %q: valid modes are %s", errInvalidAccessMode, s, strings.Join(accessModeNames(), ", "))
}

// accessModeName returns the dashed name of mode.
func accessModeName(mode csi.VolumeCapability_AccessMode_Mode) string {
	for _, m := range accessModes {
		if m.mode == mode {
			return m.name
		}
	}
	return mode.String()
}

// accessModeNames returns every accepted access mode name.
func accessModeNames() []string {
	names := make([]string, 0, len(accessModes))
	for _, m := range accessModes {
		names = append(names, m.name)
	}
	return names
}

// sortedKeys returns the keys of m in lexical order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
