package mapper

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// librbd image feature bits (include/rbd/features.h); the kernel's
// /sys/bus/rbd/supported_features uses the same bits.
var featureBits = map[string]uint64{
	"layering":       1 << 0,
	"striping":       1 << 1,
	"exclusive-lock": 1 << 2,
	"object-map":     1 << 3,
	"fast-diff":      1 << 4,
	"deep-flatten":   1 << 5,
	"journaling":     1 << 6,
	"data-pool":      1 << 7,
	"operations":     1 << 8,
	"migrating":      1 << 9,
	"non-primary":    1 << 10,
}

// disablableFeatures can be turned off on an existing image with
// `rbd feature disable`; the others are fixed at creation (or internal).
var disablableFeatures = []string{"exclusive-lock", "object-map", "fast-diff", "deep-flatten", "journaling"}

// readOnlyIncompatible are the features a kernel must understand even to
// map an image read-only (librbd's RBD_FEATURES_INCOMPATIBLE); the rest
// only matter for writers.
const readOnlyIncompatible = 1<<0 | 1<<1 | 1<<7 | 1<<10

// parseFeatureMask parses supported_features, which the kernel prints as
// "0x3d" (older kernels print without the 0x).
func parseFeatureMask(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	return strconv.ParseUint(s, 16, 64)
}

// missingFeatures returns the image's known features that are not in
// supported, in feature-bit order. Unknown names are returned separately:
// the kernel decides about those at map time.
func missingFeatures(features []string, supported uint64, readOnly bool) (missing, unknown []string) {
	for _, f := range features {
		f = strings.TrimSpace(strings.ToLower(f))
		bit, ok := featureBits[f]
		switch {
		case f == "":
		case !ok:
			unknown = append(unknown, f)
		case readOnly && bit&readOnlyIncompatible == 0:
		case supported&bit == 0 && !slices.Contains(missing, f):
			missing = append(missing, f)
		}
	}
	sortByBit(missing)
	return missing, unknown
}

// unsupportedFeaturesError tells the operator which features the kernel
// lacks and the ways out.
func unsupportedFeaturesError(img Image, missing []string, supported uint64) error {
	return fmt.Errorf("%w: image %s uses feature(s) %s that this node's kernel rbd driver does not support (kernel supported_features=0x%x); fix: %s",
		ErrUnsupportedFeatures, img.Spec(), strings.Join(missing, ", "), supported, featureFix(img, missing))
}

// featureFix lists the remedies, offering `rbd feature disable` only when
// every missing feature can be disabled.
func featureFix(img Image, missing []string) string {
	var fix []string
	if cmd, ok := FeatureDisableCommand(img.Spec(), missing); ok {
		fix = append(fix, fmt.Sprintf("disable them on the image: `%s`", cmd))
	}
	fix = append(fix,
		"create new volumes from a StorageClass with parameter imageFeatures=layering",
		"or use StorageClass parameter mounter: rbd-nbd (userspace librbd supports every feature)",
		"or upgrade the node kernel")
	return strings.Join(fix, "; ")
}

// featureNames returns the names of the known bits in mask, in bit order.
func featureNames(mask uint64) []string {
	var names []string
	for name, bit := range featureBits {
		if mask&bit != 0 {
			names = append(names, name)
		}
	}
	sortByBit(names)
	return names
}

func sortByBit(fs []string) {
	slices.SortFunc(fs, func(a, b string) int { return int(featureBits[a]) - int(featureBits[b]) })
}

func allDisablable(fs []string) bool {
	for _, f := range fs {
		if !slices.Contains(disablableFeatures, f) {
			return false
		}
	}
	return len(fs) > 0
}

// reverseDependencyOrder lists features in the order `rbd feature disable`
// accepts them: dependents first (fast-diff before object-map before
// exclusive-lock; journaling also needs exclusive-lock).
func reverseDependencyOrder(fs []string) []string {
	out := slices.Clone(fs)
	// Descending bit order happens to be dependents-first: journaling,
	// deep-flatten, fast-diff, object-map, and exclusive-lock last.
	slices.SortFunc(out, func(a, b string) int { return int(featureBits[b]) - int(featureBits[a]) })
	return out
}
