package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/atomicfile"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// stageState is what the node plugin knows about one staged volume. It is
// written next to the staging path before anything is mapped, and updated
// after each step, so that after a plugin restart NodeUnstageVolume and
// NodeGetVolumeStats find the device (and a crash half way through staging
// can be undone). It holds no secret.
type stageState struct {
	VolumeID string     `json:"volumeID"`
	Image    stageImage `json:"image"`
	Mapper   string     `json:"mapper"`
	// MapOptions are the volume's map options, for re-attaching at
	// start-up with the same ones (absent in older files: the defaults).
	MapOptions  string         `json:"mapOptions,omitempty"`
	Device      *mapper.Device `json:"device,omitempty"`
	Block       bool           `json:"block"`
	FsType      string         `json:"fsType,omitempty"`
	ReadOnly    bool           `json:"readOnly,omitempty"`
	AccessMode  string         `json:"accessMode"`
	StagingPath string         `json:"stagingPath"`
	Mounted     bool           `json:"mounted,omitempty"`
	MountFlags  []string       `json:"mountFlags,omitempty"`
	Targets     []string       `json:"targets,omitempty"`
	// CryptName is the LUKS device of an encrypted volume (recorded before
	// it is opened, so an unstage after a crash closes it), CryptPath its
	// node once open.
	CryptName string `json:"cryptName,omitempty"`
	CryptPath string `json:"cryptPath,omitempty"`
}

// volumeDevice is what the pod's data goes through: the opened LUKS
// device of an encrypted volume, else the mapped image.
func (st *stageState) volumeDevice() string {
	if st.CryptPath != "" {
		return st.CryptPath
	}
	return st.Device.Path
}

// stageImage names the image without credentials.
type stageImage struct {
	ClusterID string   `json:"clusterID,omitempty"`
	Monitors  []string `json:"monitors,omitempty"`
	Pool      string   `json:"pool"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
}

// stateFile is the state's place: a sibling of the staging directory, so it
// is never hidden by the mount on the staging path itself.
func stateFile(stagingPath string) string {
	return filepath.Clean(stagingPath) + ".rbd-csi.json"
}

func loadState(stagingPath string) (*stageState, error) {
	data, err := os.ReadFile(stateFile(stagingPath))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stage state: %w", err)
	}
	var st stageState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("stage state %s is corrupt: %w", stateFile(stagingPath), err)
	}
	return &st, nil
}

// save writes the state atomically (temp file, fsync, rename).
func (st *stageState) save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(stateFile(st.StagingPath), data, 0o600)
}

func removeState(stagingPath string) error {
	err := os.Remove(stateFile(stagingPath))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stage state: %w", err)
	}
	return nil
}

// lockNodeVolume serialises the node calls for one volume; the error is
// the gRPC status to return (Aborted while another call holds it).
func (d *nodeService) lockNodeVolume(ctx context.Context, volumeID string) (func(), error) {
	unlock, err := d.locks.Lock(ctx, "node/"+volumeID)
	if err != nil {
		return nil, lockStatus(err, "volume "+volumeID)
	}
	return unlock, nil
}

func (st *stageState) hasTarget(t string) bool { return slices.Contains(st.Targets, t) }

// volumeIndex maps volume IDs to staging paths under the state directory,
// for the calls that name a volume but not its staging path
// (NodeGetVolumeStats, NodeExpandVolume).
type volumeIndex struct{ dir string }

func (x volumeIndex) file(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return filepath.Join(x.dir, hex.EncodeToString(sum[:16]))
}

func (x volumeIndex) put(volumeID, stagingPath string) error {
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		return fmt.Errorf("volume index: %w", err)
	}
	return atomicfile.Write(x.file(volumeID), []byte(stagingPath), 0o600)
}

func (x volumeIndex) get(volumeID string) (string, bool) {
	data, err := os.ReadFile(x.file(volumeID))
	if err != nil {
		return "", false
	}
	return string(data), true
}

// stagingPaths lists the staging paths of every indexed volume.
func (x volumeIndex) stagingPaths() []string {
	entries, err := os.ReadDir(x.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
			continue
		}
		if data, err := os.ReadFile(filepath.Join(x.dir, e.Name())); err == nil {
			out = append(out, string(data))
		}
	}
	return out
}

func (x volumeIndex) drop(volumeID string) {
	_ = os.Remove(x.file(volumeID))
}
