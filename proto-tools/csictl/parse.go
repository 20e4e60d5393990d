package main

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

var (
	errInvalidSize       = errors.New("invalid size")
	errInvalidKV         = errors.New("invalid key=value pair")
	errInvalidEndpoint   = errors.New("invalid endpoint")
	errInvalidAccessMode = errors.New("invalid access mode")
)

// sizeUnits maps the accepted binary suffixes to their multipliers.
var sizeUnits = map[string]int64{
	"":   1,
	"Ki": 1 << 10,
	"Mi": 1 << 20,
	"Gi": 1 << 30,
	"Ti": 1 << 40,
}

// parseSize parses a positive byte count such as "1073741824", "512Mi" or
// "1Gi". Only the binary suffixes Ki, Mi, Gi and Ti are accepted.
func parseSize(s string) (int64, error) {
	digits, unit := splitNumber(s)
	if digits == "" {
		return 0, fmt.Errorf("%w %q: expected a whole number of bytes with an optional Ki, Mi, Gi or Ti suffix (e.g. 1Gi)", errInvalidSize, s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%w %q: %s", errInvalidSize, s, unitHint(unit))
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%w %q: too large", errInvalidSize, s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w %q: must be greater than zero", errInvalidSize, s)
	}
	return n * mult, nil
}

// splitNumber splits s into its leading decimal digits and the remainder.
func splitNumber(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// unitHint explains why a size suffix was rejected.
func unitHint(unit string) string {
	switch {
	case strings.ContainsAny(unit, " \t\r\n"):
		return "must not contain spaces"
	case strings.HasPrefix(unit, "."):
		return "fractions are not supported, use a smaller unit (e.g. 1536Mi instead of 1.5Gi)"
	case len(unit) > 0 && strings.ContainsRune("kKMGTP", rune(unit[0])):
		return fmt.Sprintf("unit %q is not supported, use the binary suffixes Ki, Mi, Gi or Ti (e.g. 1Gi)", unit)
	default:
		return fmt.Sprintf("unexpected %q after the number, use Ki, Mi, Gi, Ti or plain bytes", unit)
	}
}

// formatSize renders a byte count with the largest exact binary suffix.
func formatSize(n int64) string {
	for _, u := range []string{"Ti", "Gi", "Mi", "Ki"} {
		if m := sizeUnits[u]; n != 0 && n%m == 0 {
			return strconv.FormatInt(n/m, 10) + u
		}
	}
	return strconv.FormatInt(n, 10)
}

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
