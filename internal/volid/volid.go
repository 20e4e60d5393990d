// Package volid encodes and decodes the volume and snapshot IDs the driver
// hands to the container orchestrator. An ID carries everything a later call
// needs to find the image (cluster, pool, image name), so the driver keeps no
// state of its own outside Ceph.
//
// Format (at most 128 bytes, the CSI limit):
//
//	1/<cluster>/<pool id>/<image name>                    a volume
//	1/<cluster>/<pool id>/<image name>@<snapshot>         a snapshot
//	2/<cluster>/<pool id>/<image name>[@<snapshot>]/<user>  either, with a user
//
// <cluster> is a clusterID from the cluster config, or "m=" followed by the
// comma-separated monitor list for StorageClasses that name monitors
// directly. The pool is held by its numeric ID so a renamed pool keeps
// working. No field may contain '/', which keeps decoding unambiguous.
//
// Version 2 adds the cephx user (without "client.") that a Secret holding
// only "key" (the in-tree kubernetes.io/rbd shape) stood for when the object
// was made. Only the CreateVolume request carries the StorageClass's adminId;
// DeleteVolume, ControllerExpandVolume and the snapshot calls get the same
// key-only Secret but no parameters, so without the user in the ID they
// could only guess it. The ID is the one thing every later call receives
// before it can reach Ceph: image metadata would need a connection, and a
// connection needs the user. Version 1 is still what the driver writes
// whenever it has no user to record (a Secret naming its own user, or the
// default "admin"), so the IDs of every setup that worked before stay the
// same byte for byte, and a driver version that knows only version 1 can
// still read them.
package volid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
)

// MaxLen is the CSI limit on a volume or snapshot ID.
const MaxLen = 128

const (
	version       = "1"
	versionUser   = "2"
	monitorsMark  = "m="
	fieldSep      = "/"
	imageNameMax  = 96
	monitorsSplit = ","
)

// ErrMalformed marks an ID this driver cannot have produced.
var ErrMalformed = errors.New("not an rbd-csi ID")

// ID is a decoded volume (or snapshot) ID.
type ID struct {
	ClusterID string   // set when the cluster is named by the cluster config
	Monitors  []string // set otherwise
	PoolID    int64
	Image     string // image name; for a snapshot, "image@snap"
	// User is the cephx user a key-only Secret stands for (version 2);
	// "" encodes a version 1 ID.
	User string
}

// Encode renders the ID, or fails when it would not fit in MaxLen or holds a
// field Decode would refuse: an ID the driver hands out must always come back
// as the same image. ClusterID, when set, names the cluster and Monitors is
// left out.
func (id ID) Encode() (string, error) {
	cluster := id.ClusterID
	if cluster != "" {
		if err := clusterconfig.ValidateClusterID(cluster); err != nil {
			return "", fmt.Errorf("encode volume ID: %w", err)
		}
	} else {
		if len(id.Monitors) == 0 {
			return "", errors.New("encode volume ID: neither a clusterID nor monitors given")
		}
		for _, m := range id.Monitors {
			if err := ceph.ValidateMonitor(m); err != nil {
				return "", fmt.Errorf("encode volume ID: %w", err)
			}
		}
		cluster = monitorsMark + strings.Join(id.Monitors, monitorsSplit)
	}
	if id.PoolID < 0 {
		return "", fmt.Errorf("encode volume ID: pool id %d is negative", id.PoolID)
	}
	if err := ValidateImageName(id.Image); err != nil {
		return "", fmt.Errorf("encode volume ID: %w", err)
	}
	fields := []string{version, cluster, strconv.FormatInt(id.PoolID, 10), id.Image}
	shorter := ""
	if id.User != "" {
		if err := ceph.ValidateUser(id.User); err != nil {
			return "", fmt.Errorf("encode volume ID: %w", err)
		}
		fields[0] = versionUser
		fields = append(fields, id.User)
		shorter = ", or a shorter cephx user name (StorageClass parameter adminId)"
	}
	s := strings.Join(fields, fieldSep)
	if len(s) > MaxLen {
		return "", fmt.Errorf("ID %q is %d bytes, more than the %d CSI allows: name the cluster by a short clusterID in the cluster config instead of listing monitors, or use a shorter volumeNamePrefix%s", s, len(s), MaxLen, shorter)
	}
	return s, nil
}

// Decode parses an ID; any error wraps ErrMalformed.
func Decode(s string) (ID, error) {
	if len(s) > MaxLen {
		return ID{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	}
	parts := strings.Split(s, fieldSep)
	var id ID
	switch {
	case len(parts) == 4 && parts[0] == version:
	case len(parts) == 5 && parts[0] == versionUser:
		if err := ceph.ValidateUser(parts[4]); err != nil {
			return ID{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		id.User = parts[4]
	default:
		return ID{}, fmt.Errorf("%w: want 1/<cluster>/<pool id>/<image> or 2/<cluster>/<pool id>/<image>/<user>", ErrMalformed)
	}
	if err := id.setCluster(parts[1]); err != nil {
		return ID{}, err
	}
	pool, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || pool < 0 || strconv.FormatInt(pool, 10) != parts[2] {
		return ID{}, fmt.Errorf("%w: pool id %q", ErrMalformed, parts[2])
	}
	id.PoolID = pool
	if err := ValidateImageName(parts[3]); err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	id.Image = parts[3]
	return id, nil
}

func (id *ID) setCluster(field string) error {
	if mons, ok := strings.CutPrefix(field, monitorsMark); ok {
		for _, m := range strings.Split(mons, monitorsSplit) {
			if err := ceph.ValidateMonitor(m); err != nil {
				return fmt.Errorf("%w: %v", ErrMalformed, err)
			}
			id.Monitors = append(id.Monitors, m)
		}
		return nil
	}
	if err := clusterconfig.ValidateClusterID(field); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	id.ClusterID = field
	return nil
}

// ValidateImageName accepts the names this driver creates, plus one "@"
// between an image and a snapshot name for snapshot IDs, and nothing that
// could be read as a path or an option.
func ValidateImageName(name string) error {
	if name == "" || len(name) > imageNameMax {
		return fmt.Errorf("image name must be 1 to %d characters", imageNameMax)
	}
	for _, r := range name {
		ok := r == '.' || r == '_' || r == '-' || r == '@' ||
			(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return fmt.Errorf("image name %q holds %q", name, r)
		}
	}
	if strings.Count(name, "@") > 1 {
		return fmt.Errorf("image name %q holds more than one '@'", name)
	}
	image, snap, isSnap := strings.Cut(name, "@")
	if image == "" || (isSnap && snap == "") {
		return fmt.Errorf("image name %q: want image or image@snapshot", name)
	}
	for _, part := range []string{image, snap} {
		if part != "" && (part[0] == '-' || part[0] == '.') {
			return fmt.Errorf("image name %q: %q must not start with %q", name, part, part[0])
		}
	}
	return nil
}

// SplitSnapshot returns the image and the RBD snapshot a snapshot ID names;
// ok is false for a volume ID.
func (id ID) SplitSnapshot() (image, snap string, ok bool) {
	return strings.Cut(id.Image, "@")
}

// IsSnapshot reports whether the ID names a snapshot (image@snap) rather
// than a volume.
func (id ID) IsSnapshot() bool {
	_, _, ok := id.SplitSnapshot()
	return ok
}
