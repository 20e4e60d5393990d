package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// kvFlag is a repeatable --flag key=value option collected into a map.
type kvFlag map[string]string

func (f kvFlag) String() string {
	pairs := make([]string, 0, len(f))
	for _, k := range sortedKeys(f) {
		pairs = append(pairs, k+"="+f[k])
	}
	return strings.Join(pairs, ",")
}

func (f kvFlag) Set(s string) error {
	k, v, err := parseKV(s)
	if err != nil {
		return err
	}
	if _, dup := f[k]; dup {
		return fmt.Errorf("%w: duplicate key %q", errInvalidKV, k)
	}
	f[k] = v
	return nil
}

// listFlag is a repeatable string option.
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, ",") }

func (f *listFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// sizeFlag holds a byte count parsed by parseSize; zero means unset.
type sizeFlag int64

func (f *sizeFlag) String() string {
	if *f == 0 {
		return ""
	}
	return formatSize(int64(*f))
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	*f = sizeFlag(n)
	return err
}

// limitFlag is "--limit" (limit equals the requested size) or
// "--limit=SIZE" (explicit limit).
type limitFlag struct {
	set   bool
	bytes int64
}

func (f *limitFlag) IsBoolFlag() bool { return true }

func (f *limitFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	if f.bytes == 0 {
		return "true"
	}
	return formatSize(f.bytes)
}

func (f *limitFlag) Set(s string) error {
	if b, err := strconv.ParseBool(s); err == nil {
		f.set, f.bytes = b, 0
		return nil
	}
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	f.set, f.bytes = true, n
	return nil
}

// accessModeFlag holds a CSI access mode parsed by parseAccessMode.
type accessModeFlag csi.VolumeCapability_AccessMode_Mode

func (f *accessModeFlag) String() string {
	return accessModeName(csi.VolumeCapability_AccessMode_Mode(*f))
}

func (f *accessModeFlag) Set(s string) error {
	m, err := parseAccessMode(s)
	*f = accessModeFlag(m)
	return err
}

// maxEntriesFlag validates --max as a non-negative int32.
type maxEntriesFlag int32

func (f *maxEntriesFlag) String() string { return strconv.Itoa(int(*f)) }

func (f *maxEntriesFlag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid max entries %q: must be an integer between 0 and %d", s, math.MaxInt32)
	}
	*f = maxEntriesFlag(n)
	return nil
}

// parseArgs parses flags that may appear before, between or after the
// positional arguments. Everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// globals are the options accepted before or after any subcommand.
type globals struct {
	endpoint    string
	timeout     time.Duration
	output      string
	secretsFile string
}

// register binds the global options to fs.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.endpoint, "endpoint", g.endpoint, "CSI `ENDPOINT`: unix:///abs/path, unix:path or a plain socket path (default $CSI_ENDPOINT)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline for each RPC, e.g. 10s or 2m")
	fs.StringVar(&g.output, "output", g.output, "output `FORMAT`: text or json (json prints the response with protojson)")
	fs.StringVar(&g.secretsFile, "secrets-file", g.secretsFile, "`PATH` of the file with the secrets sent in every RPC that has a secrets field:\none key=value per line or a JSON object (default: JSON object in $CSI_SECRETS)")
}

// newGlobals returns the global options with their defaults.
func newGlobals() *globals {
	return &globals{timeout: 30 * time.Second, output: "text"}
}

// contextFlags collects a volume context from --context-file and --context.
type contextFlags struct {
	pairs kvFlag
	file  string
}

func (c *contextFlags) register(fs *flag.FlagSet) {
	c.pairs = kvFlag{}
	fs.Var(c.pairs, "context", "volume context entry `key=value` (repeatable; overrides --context-file)")
	fs.StringVar(&c.file, "context-file", "", "`PATH` of a JSON file with the volume context: a flat object of strings, or the\noutput of 'csictl --output json create' (its volume_context is used)")
}

// build merges the context file and the --context pairs.
func (c *contextFlags) build() (map[string]string, error) {
	m := map[string]string{}
	if c.file != "" {
		var err error
		if m, err = readContextFile(c.file); err != nil {
			return nil, err
		}
	}
	for k, v := range c.pairs {
		m[k] = v
	}
	return m, nil
}

// readContextFile loads a volume context JSON file.
func readContextFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading context file: %w", err)
	}
	m, err := parseContextJSON(data)
	if err != nil {
		return nil, fmt.Errorf("context file %s: %w", path, err)
	}
	return m, nil
}

// parseContextJSON accepts {"k":"v",...} or an object whose
// "volume_context" member is such a map (as printed by create).
func parseContextJSON(data []byte) (map[string]string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("expected a JSON object: %w", err)
	}
	if top == nil {
		return nil, fmt.Errorf("expected a JSON object, got null")
	}
	if inner, ok := top["volume_context"]; ok {
		data = inner
	}
	m := map[string]string{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("volume context must map strings to strings: %w", err)
	}
	return m, nil
}

// capFlags describes a single VolumeCapability.
type capFlags struct {
	block      bool
	fsType     string
	mountFlags listFlag
	mode       accessModeFlag
}

func (c *capFlags) register(fs *flag.FlagSet, withMountFlags bool) {
	c.mode = accessModeFlag(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	fs.BoolVar(&c.block, "block", false, "raw block volume instead of a filesystem mount")
	fs.StringVar(&c.fsType, "fs-type", "", "filesystem `TYPE` for mount volumes, e.g. ext4 or xfs (driver default if empty)")
	fs.Var(&c.mode, "access-mode", "access `MODE`: "+strings.Join(accessModeNames(), ", "))
	if withMountFlags {
		fs.Var(&c.mountFlags, "mount-flag", "mount `OPTION` for mount volumes (repeatable)")
	}
}

// build returns the capability or a usage error for conflicting options.
func (c *capFlags) build() (*csi.VolumeCapability, error) {
	vc := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_Mode(c.mode)},
	}
	if c.block {
		if c.fsType != "" || len(c.mountFlags) > 0 {
			return nil, usagef("--block cannot be combined with --fs-type or --mount-flag")
		}
		vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		return vc, nil
	}
	vc.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{
		FsType:     c.fsType,
		MountFlags: c.mountFlags,
	}}
	return vc, nil
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}
