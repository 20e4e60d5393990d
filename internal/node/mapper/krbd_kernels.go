package mapper

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// KernelVersion is an upstream kernel release, major.minor. Distribution
// kernels backport krbd features, so a version below a table entry is a
// strong hint, not proof; the node's /sys/bus/rbd/supported_features, which
// the krbd mapper reads before every map, has the last word.
type KernelVersion struct{ Major, Minor int }

func (v KernelVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less orders versions.
func (v KernelVersion) Less(o KernelVersion) bool {
	return v.Major < o.Major || (v.Major == o.Major && v.Minor < o.Minor)
}

var kernelVersionRe = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// ParseKernelVersion reads the major.minor of a kernel release string as
// `uname -r` and the Kubernetes node status print it ("5.10.0-28-amd64",
// "3.10.0-1160.el7.x86_64", "6.1").
func ParseKernelVersion(s string) (KernelVersion, error) {
	m := kernelVersionRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return KernelVersion{}, fmt.Errorf("kernel version %q: want major.minor[...], as `uname -r` prints it", s)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return KernelVersion{major, minor}, nil
}

// featureSince is the first upstream kernel whose krbd maps an image with
// the feature (drivers/block/rbd.c, RBD_FEATURES_ALL); a feature not listed
// is one no krbd maps (journaling, ...).
var featureSince = map[ceph.Features]KernelVersion{
	ceph.FeatureLayering:      {3, 10},
	ceph.FeatureStripingV2:    {4, 17},
	ceph.FeatureExclusiveLock: {4, 9},
	ceph.FeatureObjectMap:     {5, 3},
	ceph.FeatureFastDiff:      {5, 3},
	ceph.FeatureDeepFlatten:   {5, 1},
	ceph.FeatureDataPool:      {4, 11},
	ceph.FeatureOperations:    {4, 14},
}

// KernelUnsupportedFeatures returns the image features that krbd of kernel
// k cannot map, and the ones it does not know.
func KernelUnsupportedFeatures(k KernelVersion, features ceph.Features) (missing, unknown ceph.Features) {
	var supported ceph.Features
	for bit, since := range featureSince {
		if !k.Less(since) {
			supported |= bit
		}
	}
	return missingFeatures(features, supported, false)
}

// tunablesSince is the first kernel that understands each CRUSH tunables
// profile (the profile's newest required protocol feature: Ceph's
// "CRUSH tunables" documentation). "optimal" and "default" are whatever the
// cluster's release means by them: `ceph osd crush show-tunables` reports
// the profile they resolve to.
var tunablesSince = []struct {
	profile string
	since   KernelVersion
}{
	{"legacy", KernelVersion{2, 6}},
	{"argonaut", KernelVersion{3, 6}},
	{"bobtail", KernelVersion{3, 9}},
	{"firefly", KernelVersion{3, 15}},
	{"hammer", KernelVersion{4, 1}},
	{"jewel", KernelVersion{4, 5}},
}

// TunablesSince is the oldest kernel that can talk to a cluster whose CRUSH
// tunables profile is profile; ok is false for a profile this table does
// not know.
func TunablesSince(profile string) (KernelVersion, bool) {
	for _, t := range tunablesSince {
		if t.profile == profile {
			return t.since, true
		}
	}
	return KernelVersion{}, false
}

// NewestTunablesFor is the newest tunables profile kernel k understands, ""
// when it is older than every profile.
func NewestTunablesFor(k KernelVersion) string {
	best := ""
	for _, t := range tunablesSince {
		if !k.Less(t.since) {
			best = t.profile
		}
	}
	return best
}

// Straw2Since is the first kernel that maps from clusters whose CRUSH map
// has straw2 buckets (CRUSH_V4), the default bucket type since Hammer.
var Straw2Since = KernelVersion{4, 1}

// minCompatClientSince is the first kernel with every feature the monitors
// require of clients once `require_min_compat_client` is set to the release.
var minCompatClientSince = map[string]KernelVersion{
	"firefly":  {3, 15},
	"hammer":   {4, 1},
	"jewel":    {4, 5},
	"luminous": {4, 13},
}

// MinCompatClientSince is the oldest kernel the monitors accept when the
// cluster's require_min_compat_client is release; ok is false for releases
// this table does not know (newer than luminous: test a map on one node).
func MinCompatClientSince(release string) (KernelVersion, bool) {
	v, ok := minCompatClientSince[release]
	return v, ok
}

// FeatureDisableCommand is the `rbd feature disable` command that makes
// image spec mappable without the missing features, and false when one of
// them cannot be disabled on an existing image.
func FeatureDisableCommand(spec string, missing ceph.Features) (string, bool) {
	if missing == 0 || missing&^ceph.DisablableFeatures != 0 {
		return "", false
	}
	// Descending bit order is dependents first, the order `rbd feature
	// disable` accepts: journaling, deep-flatten, fast-diff, object-map,
	// exclusive-lock.
	names := missing.Names()
	slices.Reverse(names)
	return fmt.Sprintf("rbd feature disable %s %s", spec, strings.Join(names, " ")), true
}
