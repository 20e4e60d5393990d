package ceph

import (
	"fmt"
	"strings"
)

// Features is an RBD image feature bitmask with librbd's bit values. They are
// spelled out here, rather than taken from go-ceph, so that validation builds
// without cgo; a test in package librbd checks they agree with librbd.
type Features uint64

// Feature bits, as librbd defines them (RBD_FEATURE_*).
const (
	FeatureLayering      Features = 1 << 0
	FeatureStripingV2    Features = 1 << 1
	FeatureExclusiveLock Features = 1 << 2
	FeatureObjectMap     Features = 1 << 3
	FeatureFastDiff      Features = 1 << 4
	FeatureDeepFlatten   Features = 1 << 5
	FeatureJournaling    Features = 1 << 6
	FeatureDataPool      Features = 1 << 7
	FeatureOperations    Features = 1 << 8
	FeatureMigrating     Features = 1 << 9
	FeatureNonPrimary    Features = 1 << 10
)

var featureNames = []struct {
	bit  Features
	name string
}{
	{FeatureLayering, "layering"},
	{FeatureStripingV2, "striping"},
	{FeatureExclusiveLock, "exclusive-lock"},
	{FeatureObjectMap, "object-map"},
	{FeatureFastDiff, "fast-diff"},
	{FeatureDeepFlatten, "deep-flatten"},
	{FeatureJournaling, "journaling"},
	{FeatureDataPool, "data-pool"},
	{FeatureOperations, "operations"},
	{FeatureMigrating, "migrating"},
	{FeatureNonPrimary, "non-primary"},
}

// UserFeatures are the features a StorageClass may ask for. The others are
// set by librbd itself (data-pool, operations, ...) or not supported here.
const UserFeatures = FeatureLayering | FeatureExclusiveLock | FeatureObjectMap |
	FeatureFastDiff | FeatureDeepFlatten | FeatureJournaling

// KnownFeatures are the bits in the table below; others come from a newer
// librbd or kernel.
const KnownFeatures = FeatureLayering | FeatureStripingV2 | FeatureExclusiveLock | FeatureObjectMap |
	FeatureFastDiff | FeatureDeepFlatten | FeatureJournaling | FeatureDataPool | FeatureOperations |
	FeatureMigrating | FeatureNonPrimary

// ReadOnlyIncompatible are the features a client must understand even to
// open an image read-only (librbd's RBD_FEATURES_INCOMPATIBLE); the rest
// only matter to writers.
const ReadOnlyIncompatible = FeatureLayering | FeatureStripingV2 | FeatureDataPool | FeatureNonPrimary

// DisablableFeatures can be turned off on an existing image with
// `rbd feature disable`; the others are fixed at creation (or internal).
const DisablableFeatures = FeatureExclusiveLock | FeatureObjectMap | FeatureFastDiff | FeatureDeepFlatten | FeatureJournaling

// featureRequires lists what each feature cannot work without.
var featureRequires = map[Features]Features{
	FeatureObjectMap:  FeatureExclusiveLock,
	FeatureFastDiff:   FeatureObjectMap,
	FeatureJournaling: FeatureExclusiveLock,
}

// Names lists the features set, in bit order.
func (f Features) Names() []string {
	var out []string
	for _, fn := range featureNames {
		if f&fn.bit != 0 {
			out = append(out, fn.name)
		}
	}
	return out
}

// String is the comma-separated form the rbd CLI and StorageClasses use.
func (f Features) String() string { return strings.Join(f.Names(), ",") }

// ParseFeatures reads a comma-separated feature list as StorageClasses give it
// and checks that each feature is one a user may request and that what it
// depends on is requested too.
func ParseFeatures(s string) (Features, error) {
	var f Features
	for _, raw := range strings.Split(s, ",") {
		name := strings.TrimSpace(raw)
		if name == "" {
			continue
		}
		bit, ok := featureByName(name)
		if !ok || bit&UserFeatures == 0 {
			return 0, fmt.Errorf("unknown image feature %q (supported: %s)", name, UserFeatures)
		}
		f |= bit
	}
	if err := f.checkDependencies(); err != nil {
		return 0, err
	}
	return f, nil
}

// checkDependencies reports the first requested feature (in bit order) that
// lacks something it depends on, directly or through another dependency, and
// names everything to add so that one edit of the StorageClass fixes it.
func (f Features) checkDependencies() error {
	for _, fn := range featureNames {
		if f&fn.bit == 0 {
			continue
		}
		if missing := requiredBy(fn.bit) &^ f; missing != 0 {
			return fmt.Errorf("image feature %s requires %s: add %s to imageFeatures (imageFeatures: %s)", fn.name, requiredBy(fn.bit), missing, f|missing)
		}
	}
	return nil
}

// requiredBy is everything bit depends on, directly or transitively.
func requiredBy(bit Features) Features {
	var need Features
	for next := featureRequires[bit]; next&^need != 0; {
		need |= next
		var more Features
		for _, fn := range featureNames {
			if need&fn.bit != 0 {
				more |= featureRequires[fn.bit]
			}
		}
		next = more
	}
	return need
}

func featureByName(name string) (Features, bool) {
	for _, fn := range featureNames {
		if fn.name == name {
			return fn.bit, true
		}
	}
	return 0, false
}
