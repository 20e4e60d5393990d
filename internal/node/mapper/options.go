package mapper

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// option is one parsed element of MapOptions.Extra.
type option struct {
	Name     string
	Value    string
	HasValue bool
}

func (o option) String() string {
	if o.HasValue {
		return o.Name + "=" + o.Value
	}
	return o.Name
}

// optKind says what value an allowed option takes.
type optKind int

const (
	optFlag optKind = iota // no value
	optUint                // decimal unsigned integer
	optEnum                // one of a fixed set
	optText                // restricted charset (see textValueRe)
)

type optSpec struct {
	kind  optKind
	enums []string
	// min and max bound an optUint (inclusive); unit names it in errors.
	min, max uint64
	unit     string
	// pow2 asks an optUint to be a power of two.
	pow2 bool
}

// uintIn is an optUint from min to max. The bounds keep a StorageClass from
// turning a timeout into "wait forever" (0 is infinite for mount_timeout
// and io-timeout) or into a value no operator means.
func uintIn(min, max uint64, unit string) optSpec {
	return optSpec{kind: optUint, min: min, max: max, unit: unit}
}

// textValueRe is the value charset for free-form options (crush_location
// "host:a|rack:b"). No whitespace, commas, '=' or newlines can get through,
// so a value can neither add a sysfs token nor another option.
var textValueRe = regexp.MustCompile(`^[A-Za-z0-9_.:|-]+$`)

// krbdOptions is the allowlist of kernel rbd and libceph map options a
// StorageClass may set. Options that carry identity, credentials, the
// namespace or the access mode are set by the driver and refused here.
var krbdOptions = map[string]optSpec{
	// rbd driver
	"queue_depth": uintIn(1, 10240, "requests"), // blk-mq's most
	"alloc_size":  {kind: optUint, min: 512, max: 32 << 20, unit: "bytes", pow2: true},
	// 0, the kernel's default, waits for the lock forever; it stays allowed.
	"lock_timeout":     uintIn(0, 3600, "seconds"),
	"exclusive":        {kind: optFlag},
	"lock_on_read":     {kind: optFlag},
	"notrim":           {kind: optFlag},
	"compression_hint": {kind: optEnum, enums: []string{"none", "compressible", "incompressible"}},
	// libceph
	// 0 would wait forever for the monitors, blocking the image's map
	// until the plugin restarts; the kernel's default is 60.
	"mount_timeout": uintIn(1, 600, "seconds"),
	"osdkeepalive":  uintIn(1, 300, "seconds"),
	"osd_idle_ttl":  uintIn(1, 3600, "seconds"),
	// 0, the kernel's default, never times a request out; it stays allowed.
	"osd_request_timeout":        uintIn(0, 3600, "seconds"),
	"share":                      {kind: optFlag},
	"noshare":                    {kind: optFlag},
	"crc":                        {kind: optFlag},
	"nocrc":                      {kind: optFlag},
	"cephx_require_signatures":   {kind: optFlag},
	"nocephx_require_signatures": {kind: optFlag},
	"cephx_sign_messages":        {kind: optFlag},
	"nocephx_sign_messages":      {kind: optFlag},
	"tcp_nodelay":                {kind: optFlag},
	"notcp_nodelay":              {kind: optFlag},
	"abort_on_full":              {kind: optFlag},
	"rxbounce":                   {kind: optFlag},
	"ms_mode":                    {kind: optEnum, enums: []string{"legacy", "crc", "secure", "prefer-crc", "prefer-secure"}},
	"read_from_replica":          {kind: optEnum, enums: []string{"no", "balance", "localize"}},
	"crush_location":             {kind: optText},
}

// nbdOptions is the allowlist for rbd-nbd; each becomes "--NAME[=VALUE]".
var nbdOptions = map[string]optSpec{
	// 0 lets an nbd request wait forever on recent kernels.
	"io-timeout":       uintIn(1, 3600, "seconds"),
	"reattach-timeout": uintIn(0, 3600, "seconds"),
	"exclusive":        {kind: optFlag},
}

// driverOwned are options the driver sets itself; a StorageClass setting
// them would change identity, credentials or access mode behind its back.
var driverOwned = map[string]string{
	"name":              "the cephx user comes from the secret",
	"secret":            "the cephx key comes from the secret",
	"key":               "the cephx key comes from the secret",
	"fsid":              "the cluster is chosen by clusterID",
	"ip":                "the client address is chosen by the kernel",
	"mon_addr":          "monitors come from the cluster configuration",
	"_pool_ns":          "the rados namespace comes from the cluster configuration",
	"ro":                "read-only is set from the volume's access mode",
	"rw":                "read-only is set from the volume's access mode",
	"read_only":         "read-only is set from the volume's access mode",
	"read_write":        "read-only is set from the volume's access mode",
	"read-only":         "read-only is set from the volume's access mode",
	"force":             "force is an unmap option",
	"id":                "the cephx user comes from the secret",
	"keyring":           "the cephx key comes from the secret",
	"keyfile":           "the cephx key comes from the secret",
	"device":            "the device is chosen by the driver",
	"cookie":            "the cookie is chosen by the driver",
	"try-netlink":       "set by the driver",
	"quiesce-hook":      "hooks run arbitrary programs",
	"nbds_max":          "a module parameter; set it when loading nbd",
	"max_part":          "a module parameter; set it when loading nbd",
	"mon_host":          "monitors come from the cluster configuration",
	"conf":              "the configuration is chosen by the driver",
	"c":                 "the configuration is chosen by the driver",
	"m":                 "monitors come from the cluster configuration",
	"setuser":           "the driver runs the tool as itself",
	"setgroup":          "the driver runs the tool as itself",
	"cluster":           "the cluster is chosen by clusterID",
	"snap":              "snapshots are not mapped directly",
	"show-cookie":       "set by the driver",
	"encryption-format": "encryption is configured by the driver",
}

// ValidateMapOptions checks a StorageClass's map options for the named
// mapper without mapping anything, so a controller can refuse a bad
// StorageClass at CreateVolume time. Errors wrap ErrInvalidOptions.
func ValidateMapOptions(mapperName, extra string) error {
	_, err := parseOptions(mapperName, extra)
	return err
}

// ValidateMapOptionsForAny accepts map options that at least one mapper
// accepts, for a StorageClass that leaves the mapper to the node's
// default; the error is the default mapper's (krbd).
func ValidateMapOptionsForAny(extra string) error {
	var first error
	for _, name := range Names() {
		err := ValidateMapOptions(name, extra)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return fmt.Errorf("%w; no mapper accepts these options (set parameter mounter to choose one)", first)
}

// parseOptions validates extra against the mapper's allowlist and returns
// the options in their given order.
func parseOptions(mapperName, extra string) ([]option, error) {
	allowed, err := allowlistFor(mapperName)
	if err != nil {
		return nil, err
	}
	extra = strings.TrimSpace(extra)
	if extra == "" {
		return nil, nil
	}
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%w: mapper %q takes no map options, got %s", ErrInvalidOptions, mapperName, printable(extra))
	}
	var opts []option
	for _, raw := range strings.Split(extra, ",") {
		o, err := parseOption(mapperName, raw, allowed)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(opts, func(p option) bool { return p.Name == o.Name }) {
			return nil, fmt.Errorf("%w: option %q given more than once", ErrInvalidOptions, o.Name)
		}
		opts = append(opts, o)
	}
	return opts, nil
}

func allowlistFor(mapperName string) (map[string]optSpec, error) {
	switch mapperName {
	case KRBD:
		return krbdOptions, nil
	case RBDNBD:
		return nbdOptions, nil
	case Fuse:
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: unknown mapper %q (want one of %v)", ErrInvalidOptions, mapperName, Names())
	}
}

func parseOption(mapperName, raw string, allowed map[string]optSpec) (option, error) {
	if raw == "" {
		return option{}, fmt.Errorf("%w: empty option (stray comma?)", ErrInvalidOptions)
	}
	name, value, hasValue := strings.Cut(raw, "=")
	if why, owned := driverOwned[name]; owned {
		return option{}, fmt.Errorf("%w: option %q cannot be set in map options: %s", ErrInvalidOptions, name, why)
	}
	spec, ok := allowed[name]
	if !ok {
		return option{}, fmt.Errorf("%w: option %s is not allowed for mapper %q (allowed: %s)",
			ErrInvalidOptions, printable(name), mapperName, strings.Join(sortedKeys(allowed), ", "))
	}
	o := option{Name: name, Value: value, HasValue: hasValue}
	return o, checkValue(o, spec)
}

func checkValue(o option, spec optSpec) error {
	if spec.kind == optFlag {
		if o.HasValue {
			return fmt.Errorf("%w: option %q takes no value", ErrInvalidOptions, o.Name)
		}
		return nil
	}
	if !o.HasValue || o.Value == "" {
		return fmt.Errorf("%w: option %q needs a value", ErrInvalidOptions, o.Name)
	}
	switch spec.kind {
	case optUint:
		return checkUint(o, spec)
	case optEnum:
		if !slices.Contains(spec.enums, o.Value) {
			return fmt.Errorf("%w: option %q wants one of %v, got %s", ErrInvalidOptions, o.Name, spec.enums, printable(o.Value))
		}
	case optText:
		if !textValueRe.MatchString(o.Value) {
			return fmt.Errorf("%w: option %q value %s may only contain letters, digits and _ . : | -", ErrInvalidOptions, o.Name, printable(o.Value))
		}
	}
	return nil
}

func checkUint(o option, spec optSpec) error {
	n, err := strconv.ParseUint(o.Value, 10, 32)
	if err != nil || n < spec.min || n > spec.max {
		return fmt.Errorf("%w: option %q wants an integer from %d to %d (%s), got %s", ErrInvalidOptions, o.Name, spec.min, spec.max, spec.unit, printable(o.Value))
	}
	if spec.pow2 && n&(n-1) != 0 {
		return fmt.Errorf("%w: option %q wants a power of two from %d to %d (%s), got %d", ErrInvalidOptions, o.Name, spec.min, spec.max, spec.unit, n)
	}
	return nil
}

// printable bounds and quotes user input echoed in errors, so control
// characters cannot forge log lines.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.QuoteToASCII(s)
}

func sortedKeys(m map[string]optSpec) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func joinOptions(opts []option) string {
	parts := make([]string, len(opts))
	for i, o := range opts {
		parts[i] = o.String()
	}
	return strings.Join(parts, ",")
}
