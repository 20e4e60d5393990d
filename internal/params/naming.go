package params

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
)

// hashLen is the number of hex digits of the name hash in an image name:
// 128 bits, so distinct request names never meet in practice.
const hashLen = 32

// ImageName derives the RBD image name from the CO's request name. Deriving
// it (instead of recording name -> image in an omap journal, as ceph-csi
// does) is what makes CreateVolume idempotent and crash safe at the cost of a
// single RADOS create: the same request always lands on the same image name,
// and the exclusive create in librbd decides races between callers. The
// instance ID is hashed in so that two installations sharing a pool never
// claim each other's volumes.
func ImageName(prefix, instanceID, requestName string) string {
	sum := sha256.Sum256([]byte(instanceID + "\x00" + requestName))
	return prefix + hex.EncodeToString(sum[:])[:hashLen]
}

var generatedName = regexp.MustCompile(fmt.Sprintf(`^([A-Za-z0-9_][A-Za-z0-9._-]{0,%d})?[0-9a-f]{%d}$`, maxNamePrefix-1, hashLen))

// LooksGenerated reports whether name has the shape ImageName produces, so
// that listing and trash purging leave images made by hand alone.
func LooksGenerated(name string) bool { return generatedName.MatchString(name) }
