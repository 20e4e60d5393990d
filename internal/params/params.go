// Package params turns StorageClass parameters, volume contexts and CSI
// secrets into validated values, apart from the RPC handlers. It accepts both
// the ceph-csi parameter names and the legacy in-tree kubernetes.io/rbd ones,
// so a classic StorageClass moves over with few changes. Every error names the
// parameter and the value, and says what would be accepted.
package params

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// StorageClass parameter keys.
const (
	KeyClusterID     = "clusterID"
	KeyPool          = "pool"
	KeyDataPool      = "dataPool"
	KeyImageFeatures = "imageFeatures"
	KeyImageFormat   = "imageFormat"
	KeyFsTypeCSI     = "csi.storage.k8s.io/fstype"
	KeyNamePrefix    = "volumeNamePrefix"
	KeyMounter       = "mounter"
	KeyMapOptions    = "mapOptions"

	// Legacy in-tree kubernetes.io/rbd keys.
	KeyMonitors             = "monitors"
	KeyAdminID              = "adminId"
	KeyUserID               = "userId"
	KeyAdminSecretName      = "adminSecretName"
	KeyAdminSecretNamespace = "adminSecretNamespace"
	KeyUserSecretName       = "userSecretName"
	KeyUserSecretNamespace  = "userSecretNamespace"
	KeyFsType               = "fsType"

	// Keys external-provisioner adds with --extra-create-metadata.
	KeyPVCName      = "csi.storage.k8s.io/pvc/name"
	KeyPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	KeyPVName       = "csi.storage.k8s.io/pv/name"
)

// Defaults.
const (
	DefaultPool       = "rbd" // as the in-tree plugin had it
	DefaultUser       = "admin"
	DefaultNamePrefix = "csi-vol-"
	DefaultFeatures   = ceph.FeatureLayering
	maxNamePrefix     = 32
)

// FsTypes the node plugin formats.
var FsTypes = []string{"ext4", "xfs"}

// Keys are the StorageClass parameters a user writes, in the order the
// reference (docs/parameters.md) gives them.
var Keys = []string{
	KeyClusterID, KeyMonitors, KeyPool, KeyDataPool, KeyImageFeatures, KeyImageFormat,
	KeyFsTypeCSI, KeyFsType, KeyNamePrefix, KeyMounter, KeyMapOptions, KeyEncrypted, KeyEncryptKMS,
	KeyAdminID, KeyUserID, KeyAdminSecretName, KeyAdminSecretNamespace, KeyUserSecretName, KeyUserSecretNamespace,
}

// metadataKeys are added by external-provisioner, not by users.
var metadataKeys = []string{KeyPVCName, KeyPVCNamespace, KeyPVName}

// secretRefKeys are the csi.storage.k8s.io/*-secret-* keys the sidecars
// consume; they are accepted (some sidecar versions pass them through) and
// otherwise ignored.
var secretRefKeys = func() map[string]bool {
	m := map[string]bool{}
	for _, op := range []string{"provisioner", "controller-publish", "node-stage", "node-publish", "controller-expand", "node-expand", "snapshotter"} {
		m["csi.storage.k8s.io/"+op+"-secret-name"] = true
		m["csi.storage.k8s.io/"+op+"-secret-namespace"] = true
	}
	return m
}()

// Volume is a validated set of StorageClass parameters.
type Volume struct {
	ClusterID  string   // from clusterID; empty when Monitors is used
	Monitors   []string // from the legacy monitors key
	Pool       string
	DataPool   string
	Features   ceph.Features
	FsType     string // "" when the StorageClass does not say
	Prefix     string
	Mounter    string // "" = node default
	MapOpts    string
	AdminID    string // legacy: the user for controller secrets that hold only "key"
	UserID     string // legacy: the user for node secrets that hold only "key"
	Encryption Encryption
	Claim      Claim
}

// Claim records which Kubernetes objects a volume was made for.
type Claim struct {
	PVCName, PVCNamespace, PVName string
}

// ParseVolume validates StorageClass parameters. Unknown keys are errors so
// that a typo does not silently give a volume other than the one asked for.
func ParseVolume(in map[string]string) (Volume, error) {
	v := Volume{Pool: DefaultPool, Features: DefaultFeatures, Prefix: DefaultNamePrefix}
	if err := checkKeys(in); err != nil {
		return Volume{}, err
	}
	steps := []func(map[string]string) error{
		v.parseCluster, v.parsePools, v.parseImage, v.parseFsType, v.parseNode, v.parseUsers, v.parseEncryption,
	}
	for _, step := range steps {
		if err := step(in); err != nil {
			return Volume{}, err
		}
	}
	v.Claim = Claim{PVCName: in[KeyPVCName], PVCNamespace: in[KeyPVCNamespace], PVName: in[KeyPVName]}
	return v, nil
}

func checkKeys(in map[string]string) error {
	var unknown []string
	for k := range in {
		if !slices.Contains(Keys, k) && !slices.Contains(metadataKeys, k) && !secretRefKeys[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	names := make([]string, len(unknown))
	for i, k := range unknown {
		names[i] = strconv.Quote(k)
	}
	what := "parameter " + names[0] + ": remove it"
	if len(names) > 1 {
		what = "parameters " + strings.Join(names, ", ") + ": remove them"
	}
	return invalidf("unknown StorageClass %s (known: %s)", what, strings.Join(Keys, ", "))
}

func (v *Volume) parseCluster(in map[string]string) error {
	id, hasID := in[KeyClusterID]
	mons, hasMons := in[KeyMonitors]
	switch {
	case hasID && hasMons:
		return invalidf("parameters %s and %s both given: keep one (clusterID names a cluster in the cluster config)", KeyClusterID, KeyMonitors)
	case hasID:
		if err := clusterconfig.ValidateClusterID(id); err != nil {
			return invalidf("parameter %s: %w", KeyClusterID, err)
		}
		v.ClusterID = id
	case hasMons:
		list, err := clusterconfig.ParseMonitors(mons)
		if err != nil {
			return invalidf("parameter %s=%q: %w", KeyMonitors, mons, err)
		}
		v.Monitors = list
	default:
		return invalidf("parameter %s (or the legacy %s) is required", KeyClusterID, KeyMonitors)
	}
	return nil
}

func (v *Volume) parsePools(in map[string]string) error {
	if p, ok := in[KeyPool]; ok {
		if err := ceph.ValidatePoolName(p); err != nil {
			return invalidf("parameter %s: %w", KeyPool, err)
		}
		v.Pool = p
	}
	if p, ok := in[KeyDataPool]; ok && p != "" {
		if err := ceph.ValidatePoolName(p); err != nil {
			return invalidf("parameter %s: %w", KeyDataPool, err)
		}
		v.DataPool = p
	}
	return nil
}

func (v *Volume) parseImage(in map[string]string) error {
	if f, ok := in[KeyImageFormat]; ok && f != "2" {
		return invalidf("parameter %s=%q: only format \"2\" is supported (format 1 images were deprecated by Ceph and cannot be cloned or mapped with modern features)", KeyImageFormat, f)
	}
	if s, ok := in[KeyImageFeatures]; ok {
		f, err := ceph.ParseFeatures(s)
		if err != nil {
			return invalidf("parameter %s=%q: %w", KeyImageFeatures, s, err)
		}
		if f == 0 {
			f = DefaultFeatures
		}
		v.Features = f
	}
	if p, ok := in[KeyNamePrefix]; ok {
		if err := validatePrefix(p); err != nil {
			return invalidf("parameter %s: %w", KeyNamePrefix, err)
		}
		v.Prefix = p
	}
	return nil
}

func (v *Volume) parseFsType(in map[string]string) error {
	csiFs, legacyFs := in[KeyFsTypeCSI], in[KeyFsType]
	if csiFs != "" && legacyFs != "" && csiFs != legacyFs {
		return invalidf("parameters %s=%q and %s=%q disagree: keep one", KeyFsTypeCSI, csiFs, KeyFsType, legacyFs)
	}
	fs := csiFs
	if fs == "" {
		fs = legacyFs
	}
	if fs != "" && !slices.Contains(FsTypes, fs) {
		key := KeyFsTypeCSI
		if csiFs == "" {
			key = KeyFsType
		}
		return invalidf("parameter %s=%q: filesystem type not supported: use one of %s", key, fs, strings.Join(FsTypes, ", "))
	}
	v.FsType = fs
	return nil
}

func (v *Volume) parseNode(in map[string]string) error {
	if m, ok := in[KeyMounter]; ok && m != "" {
		if !slices.Contains(mapper.Names(), m) {
			return invalidf("parameter %s=%q: use one of %s", KeyMounter, m, strings.Join(mapper.Names(), ", "))
		}
		v.Mounter = m
	}
	if o, ok := in[KeyMapOptions]; ok {
		if err := validateMapOptions(v.Mounter, o); err != nil {
			return invalidf("parameter %s: %w", KeyMapOptions, err)
		}
		v.MapOpts = o
	}
	return nil
}

func (v *Volume) parseEncryption(in map[string]string) (err error) {
	v.Encryption, err = ParseEncryption(in)
	return err
}

func (v *Volume) parseUsers(in map[string]string) error {
	v.AdminID, v.UserID = DefaultUser, ""
	if a, ok := in[KeyAdminID]; ok {
		if err := ceph.ValidateUser(a); err != nil {
			return invalidf("parameter %s: %w", KeyAdminID, err)
		}
		v.AdminID = a
	}
	if u, ok := in[KeyUserID]; ok {
		if err := ceph.ValidateUser(u); err != nil {
			return invalidf("parameter %s: %w", KeyUserID, err)
		}
		v.UserID = u
	}
	if v.UserID == "" {
		// In-tree: "userId ... Default is the same as adminId."
		v.UserID = v.AdminID
	}
	return nil
}

// ValidateMapOptions accepts map options that at least one mapper's
// allowlist accepts (the StorageClass leaves the mapper to the node).
func ValidateMapOptions(s string) error {
	return validateMapOptions("", s)
}

// validateMapOptions checks s with the allowlist of the node's mapper, so
// that CreateVolume refuses what NodeStageVolume would. Surrounding
// whitespace, which the mapper trims, is refused: the value should say
// exactly what the node gets.
func validateMapOptions(mounter, s string) error {
	if strings.TrimSpace(s) != s {
		return invalidf("map options %q: remove the surrounding whitespace", s)
	}
	check := mapper.ValidateMapOptionsForAny
	if mounter != "" {
		check = func(s string) error { return mapper.ValidateMapOptions(mounter, s) }
	}
	if err := check(s); err != nil {
		return invalidf("%w", err)
	}
	return nil
}

func validatePrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > maxNamePrefix || !ceph.IsPlainName(p) || p[0] == '-' || p[0] == '.' {
		return invalidf("prefix %q: at most %d letters, digits, '.', '_' or '-', not starting with '-' or '.'", p, maxNamePrefix)
	}
	if strings.HasPrefix(p, SnapshotImagePrefix) {
		// Listing tells snapshot images from volumes by this prefix.
		return invalidf("prefix %q: names starting with %q are reserved for snapshot images", p, SnapshotImagePrefix)
	}
	return nil
}
