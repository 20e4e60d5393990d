package mapper

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// parseFeatureMask parses supported_features, which the kernel prints as
// "0x3d" (older kernels print without the 0x); the kernel uses librbd's
// feature bits.
func parseFeatureMask(s string) (ceph.Features, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	mask, err := strconv.ParseUint(s, 16, 64)
	return ceph.Features(mask), err
}

// missingFeatures returns the image's known features that are not in
// supported (a reader needs only the read-incompatible ones). Unknown bits
// are returned separately: the kernel decides about those at map time.
func missingFeatures(features, supported ceph.Features, readOnly bool) (missing, unknown ceph.Features) {
	need := features & ceph.KnownFeatures
	if readOnly {
		need &= ceph.ReadOnlyIncompatible
	}
	return need &^ supported, features &^ ceph.KnownFeatures
}

// unsupportedFeaturesError tells the operator which features the kernel
// lacks and the ways out.
func unsupportedFeaturesError(img Image, missing, supported ceph.Features) error {
	return fmt.Errorf("%w: image %s uses feature(s) %s that this node's kernel rbd driver does not support (kernel supported_features=0x%x); fix: %s",
		ErrUnsupportedFeatures, img.Spec(), strings.Join(missing.Names(), ", "), uint64(supported), featureFix(img, missing))
}

// featureFix lists the remedies, offering `rbd feature disable` only when
// every missing feature can be disabled.
func featureFix(img Image, missing ceph.Features) string {
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
