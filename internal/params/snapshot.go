package params

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
)

// VolumeSnapshotClass parameter keys beyond the StorageClass ones.
const (
	// Keys external-snapshotter adds with --extra-create-metadata.
	KeySnapshotName        = "csi.storage.k8s.io/volumesnapshot/name"
	KeySnapshotNamespace   = "csi.storage.k8s.io/volumesnapshot/namespace"
	KeySnapshotContentName = "csi.storage.k8s.io/volumesnapshotcontent/name"
	SnapshotImagePrefix    = "csi-snap-"
	snapshotNameHashDomain = "\x00snapshot\x00"
	tempSnapPrefix         = "csi-tmp-"
	tempSnapHashHexDigits  = 20
)

// SnapshotKeys are the VolumeSnapshotClass parameters a user writes.
var SnapshotKeys = []string{KeyClusterID, KeyPool}

// Snapshot is a validated set of VolumeSnapshotClass parameters.
type Snapshot struct {
	ClusterID string // "" = the source volume's cluster
	Pool      string // "" = the source volume's pool
	Claim     SnapshotClaim
}

// SnapshotClaim records which Kubernetes objects a snapshot was made for.
type SnapshotClaim struct {
	Name, Namespace, ContentName string
}

// ParseSnapshot validates VolumeSnapshotClass parameters. A snapshot lives
// in its source volume's cluster; clusterID, when given, must name it (it
// is checked by the caller), and pool may place the snapshot's image in
// another pool of that cluster. Unknown keys are errors, as for volumes.
func ParseSnapshot(in map[string]string) (Snapshot, error) {
	var s Snapshot
	var unknown []string
	for k, v := range in {
		switch {
		case k == KeyClusterID:
			if err := clusterconfig.ValidateClusterID(v); err != nil {
				return Snapshot{}, invalidf("parameter %s: %w", KeyClusterID, err)
			}
			s.ClusterID = v
		case k == KeyPool:
			if err := ceph.ValidatePoolName(v); err != nil {
				return Snapshot{}, invalidf("parameter %s: %w", KeyPool, err)
			}
			s.Pool = v
		case k == KeySnapshotName, k == KeySnapshotNamespace, k == KeySnapshotContentName, secretRefKeys[k]:
		default:
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Snapshot{}, invalidf("unknown VolumeSnapshotClass parameter %s: remove it (known: %s)", strings.Join(unknown, ", "), strings.Join(SnapshotKeys, ", "))
	}
	s.Claim = SnapshotClaim{Name: in[KeySnapshotName], Namespace: in[KeySnapshotNamespace], ContentName: in[KeySnapshotContentName]}
	return s, nil
}

// SnapshotImageName derives the name of the image that holds a CSI
// snapshot from the CO's snapshot name, as ImageName does for volumes: the
// same name always lands on the same image, which makes CreateSnapshot
// idempotent and crash safe without a journal. The hash domain differs from
// volumes', so a snapshot and a volume with the same CO name never meet.
func SnapshotImageName(instanceID, requestName string) string {
	return ImageName(SnapshotImagePrefix, instanceID, snapshotNameHashDomain+requestName)
}

// IsSnapshotImage reports whether an image name is one SnapshotImageName
// makes (volume names cannot start with the snapshot prefix: see
// validatePrefix).
func IsSnapshotImage(name string) bool {
	return strings.HasPrefix(name, SnapshotImagePrefix) && LooksGenerated(name)
}

// IsTempSnapName reports whether a snapshot name is one TempSnapName makes.
func IsTempSnapName(name string) bool {
	hash, ok := strings.CutPrefix(name, tempSnapPrefix)
	if !ok || len(hash) != tempSnapHashHexDigits {
		return false
	}
	_, err := hex.DecodeString(hash)
	return err == nil
}

// TempSnapName names the short-lived RBD snapshot taken on a source volume
// while a CSI snapshot or a clone of it is made. It is derived from the
// target image so that a retry finds (and finally removes) the snapshot an
// interrupted attempt left, and two targets never share one.
func TempSnapName(target string) string {
	sum := sha256.Sum256([]byte(target))
	return tempSnapPrefix + hex.EncodeToString(sum[:])[:tempSnapHashHexDigits]
}
