package mapper

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// kernelLogTimeout bounds reading the kernel log after a failed map; the
// caller's context may already be over by then.
const kernelLogTimeout = 3 * time.Second

// diagnoseMapFailure explains a failed or timed-out add write using the
// kernel log, where libceph and rbd say what really went wrong. mons are
// the monitor addresses the add named.
func (k *krbd) diagnoseMapFailure(ctx context.Context, img Image, mons []string, start time.Time, werr error) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), kernelLogTimeout)
	defer cancel()
	lines, lerr := k.cfg.KernelLog.Since(lctx, start)
	if lerr != nil {
		klog.V(2).InfoS("krbd: kernel log unavailable for diagnosis", "err", lerr)
	}
	return classifyMapFailure(img, werr, ownKernelLines(lines, img, mons), lerr)
}

var (
	kernelImageRe  = regexp.MustCompile(`rbd: image ([^:]*):`)
	kernelDeviceRe = regexp.MustCompile(`rbd: rbd[0-9]+:`)
	kernelAddrRe   = regexp.MustCompile(`(?:[0-9]{1,3}\.){3}[0-9]{1,3}:[0-9]+|\[[0-9A-Fa-f:.]+\]:[0-9]+`)
	kernelFSIDRe   = regexp.MustCompile(`fsid ([0-9A-Fa-f-]{36})`)
)

// ownKernelLines keeps the rbd and libceph messages of this mapping only.
// A map error becomes an Event any user of the namespace can read, so a
// line that names another image, a mapped device, another address or
// another cluster (other volumes' mappings, logged meanwhile) must not get
// in. Lines that name nothing (e.g. "missing required protocol features")
// stay: they tell the operator most and reveal no other volume.
func ownKernelLines(lines []string, img Image, mons []string) []string {
	var out []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if (strings.Contains(l, "libceph") || strings.Contains(l, "rbd")) && isOwnKernelLine(l, img, mons) {
			out = append(out, l)
		}
	}
	return out
}

func isOwnKernelLine(l string, img Image, mons []string) bool {
	// An echoed map option may hold another map's secret; one holding
	// this map's key is ours (and redacted before it goes anywhere).
	if strings.Contains(l, "bad option") {
		return img.Key != "" && strings.Contains(l, img.Key)
	}
	if kernelDeviceRe.MatchString(l) {
		return false // a mapped device: not this failed map
	}
	if m := kernelImageRe.FindStringSubmatch(l); m != nil && m[1] != img.Name {
		return false
	}
	if m := kernelFSIDRe.FindStringSubmatch(l); m != nil && !strings.EqualFold(m[1], img.ClusterFSID) {
		return false
	}
	for _, a := range kernelAddrRe.FindAllString(l, -1) {
		if !slices.ContainsFunc(mons, func(m string) bool { return addrHost(m) == addrHost(a) }) {
			return false
		}
	}
	return true
}

// addrHost is the host of "ip:port", "[ip6]:port" or a bare address.
func addrHost(a string) string {
	if strings.HasPrefix(a, "[") {
		h, _, _ := strings.Cut(a[1:], "]")
		return h
	}
	if strings.Count(a, ":") == 1 {
		h, _, _ := strings.Cut(a, ":")
		return h
	}
	return a
}

var (
	missingRe   = regexp.MustCompile(`missing ([0-9a-fA-F]+)\b`)
	unsupFeatRe = regexp.MustCompile(`unsupported features: (0x[0-9a-fA-F]+|[0-9a-fA-F]+)`)
)

// findMismatch finds libceph's protocol feature complaint, preferring the
// "feature set mismatch ... missing <hex>" line, which names the bits.
func findMismatch(lines []string) (string, bool) {
	if line, ok := findAny(lines, []string{"feature set mismatch"}); ok {
		return line, true
	}
	return findAny(lines, []string{"missing required protocol features"})
}

// classifyMapFailure turns the write error and the kernel's messages into
// one of the package errors with advice. Pure, for tests.
func classifyMapFailure(img Image, werr error, klines []string, logErr error) error {
	evidence := kernelEvidence(klines, logErr)
	if line, ok := findMismatch(klines); ok {
		return fmt.Errorf("%w: %s; %w%s", ErrClusterIncompatible, clusterIncompatibleAdvice(line), werr, evidence)
	}
	if line, ok := findAny(klines, []string{"unsupported features"}); ok {
		return fmt.Errorf("%w: %s%s", ErrUnsupportedFeatures, kernelFeatureAdvice(img, line), evidence)
	}
	if errors.Is(werr, ErrMapTimeout) {
		return fmt.Errorf("%w; check that this node can reach the monitors %v and that the cluster is healthy%s", werr, img.Monitors, evidence)
	}
	return classifyErrno(img, werr, evidence)
}

func classifyErrno(img Image, werr error, evidence string) error {
	switch {
	case errors.Is(werr, syscall.ENOENT):
		return fmt.Errorf("%w: the kernel found no image %s (or its pool does not exist): %v%s", ErrImageNotFound, img.Spec(), werr, evidence)
	case errors.Is(werr, syscall.EACCES), errors.Is(werr, syscall.EPERM):
		return fmt.Errorf("%w: the cluster refused client.%s for %s; check the secret and the user's caps (mon 'profile rbd', osd 'profile rbd pool=%s'): %v%s",
			ErrAccessDenied, img.User, img.Spec(), img.Pool, werr, evidence)
	case errors.Is(werr, syscall.EINVAL):
		return fmt.Errorf("%w: the kernel rejected the map request for %s (an option this kernel does not know?): %v%s", ErrInvalidOptions, img.Spec(), werr, evidence)
	case errors.Is(werr, syscall.ENXIO):
		return fmt.Errorf("%w: the kernel cannot map %s (usually unsupported image features): %v%s", ErrUnsupportedFeatures, img.Spec(), werr, evidence)
	case errors.Is(werr, syscall.ETIMEDOUT):
		return fmt.Errorf("%w: the kernel could not reach the monitors %v within mount_timeout: %v%s", ErrMapTimeout, img.Monitors, werr, evidence)
	default:
		return fmt.Errorf("%w: mapping %s: %v%s", ErrMapFailed, img.Spec(), werr, evidence)
	}
}

// kernelEvidence quotes the last relevant kernel lines for the operator.
func kernelEvidence(lines []string, logErr error) string {
	if logErr != nil {
		return fmt.Sprintf(" (kernel log unavailable: %v)", logErr)
	}
	if len(lines) == 0 {
		return ""
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "; kernel log: " + strings.Join(lines, " | ")
}

func findAny(lines []string, words []string) (string, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		for _, w := range words {
			if strings.Contains(lines[i], w) {
				return lines[i], true
			}
		}
	}
	return "", false
}

// cephFeatureNames names the protocol feature bits a cluster commonly
// requires that older kernels lack (include/linux/ceph/ceph_features.h).
var cephFeatureNames = map[int]string{
	18: "CRUSH_TUNABLES (argonaut CRUSH tunables)",
	21: "SERVER_LUMINOUS/OSDMAP_PG_UPMAP/CRUSH_CHOOSE_ARGS (luminous: pg-upmap, choose_args; kernel >= 4.13)",
	25: "CRUSH_TUNABLES2 (bobtail CRUSH tunables; kernel >= 3.9)",
	36: "CRUSH_V2 (newer CRUSH rule steps)",
	41: "CRUSH_TUNABLES3 (firefly CRUSH tunables / primary affinity; kernel >= 3.15)",
	48: "CRUSH_V4 (straw2 buckets; kernel >= 4.1)",
	58: "CRUSH_TUNABLES5 (jewel CRUSH tunables; kernel >= 4.5)",
	59: "MSG_ADDR2 (nautilus address format)",
	61: "CEPHX_V2 (cephx v2 authentication)",
}

// clusterIncompatibleAdvice decodes "missing <hex>" and says what to do.
func clusterIncompatibleAdvice(line string) string {
	names := "unknown"
	if m := missingRe.FindStringSubmatch(line); m != nil {
		if mask, err := strconv.ParseUint(m[1], 16, 64); err == nil {
			names = fmt.Sprintf("0x%x = %s", mask, describeCephFeatures(mask))
		}
	}
	return "the cluster requires protocol features this node's kernel (libceph) does not support (missing " + names + "). " +
		"Usually the cluster's CRUSH tunables or bucket types are newer than this kernel understands. Fix one of: " +
		"(1) lower the cluster's requirements to what this kernel supports, e.g. " + tunablesExample("hammer") + " or " + tunablesExample("firefly") + "; " +
		"changing tunables starts a rebalance that moves a large share of the data (I/O impact for hours on big clusters) and gives up the newer profile's better placement; " +
		"(2) upgrade the node kernel; " +
		"(3) use StorageClass parameter mounter: rbd-nbd (or fuse), which use userspace librbd and do not depend on the kernel's feature set"
}

// tunablesExample is one way out of clusterIncompatibleAdvice, with the
// kernel the profile needs (from tunablesSince).
func tunablesExample(profile string) string {
	v, _ := TunablesSince(profile)
	return fmt.Sprintf("`ceph osd crush tunables %s` (kernel >= %s)", profile, v)
}

func describeCephFeatures(mask uint64) string {
	var parts []string
	for mask != 0 {
		bit := bits.TrailingZeros64(mask)
		mask &^= 1 << bit
		if name, ok := cephFeatureNames[bit]; ok {
			parts = append(parts, name)
		} else {
			parts = append(parts, fmt.Sprintf("bit %d", bit))
		}
	}
	return strings.Join(parts, ", ")
}

// kernelFeatureAdvice decodes the kernel's "image uses unsupported
// features: 0x38" message into names and advice.
func kernelFeatureAdvice(img Image, line string) string {
	m := unsupFeatRe.FindStringSubmatch(line)
	if m == nil {
		return fmt.Sprintf("the kernel refused %s: %s; recreate the image with StorageClass parameter imageFeatures=layering or use mounter: rbd-nbd", img.Spec(), line)
	}
	mask, err := parseFeatureMask(m[1])
	if err != nil {
		return line
	}
	return fmt.Sprintf("the kernel refused %s because it uses feature(s) %s (0x%x) that this kernel's rbd driver does not support; fix: %s",
		img.Spec(), strings.Join(mask.Names(), ", "), uint64(mask), featureFix(img, mask&ceph.KnownFeatures))
}
