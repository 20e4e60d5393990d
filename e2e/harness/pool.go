package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/volid"
)

// Pool is one test's view of the test cluster's pool: the test's images
// carry a unique name prefix, so counting images and trash entries sees only
// them even while other tests use the same pool.
type Pool struct {
	Env       cephtest.Env
	ClusterID string
	Prefix    string
	// Dir is the test's directory, holding the cluster config.
	Dir string
	// Backend talks to the cluster directly, bypassing the driver.
	Backend *librbd.Backend
}

// NewPool writes a cluster config naming the test cluster clusterID and
// picks a fresh image name prefix. It skips the test without a cluster.
func NewPool(t testing.TB, clusterID string) *Pool {
	t.Helper()
	env := cephtest.FromEnv(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	p := &Pool{Env: env, ClusterID: clusterID, Prefix: "t" + hex.EncodeToString(b) + "-", Dir: t.TempDir(),
		Backend: librbd.New(librbd.Options{OpTimeout: 20 * time.Second})}
	t.Cleanup(p.Backend.Close)
	if err := os.WriteFile(p.ConfigPath(), []byte(env.ClusterConfigJSON(clusterID)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ConfigPath is the cluster config file, for --cluster-config.
func (p *Pool) ConfigPath() string { return filepath.Join(p.Dir, "clusters.json") }

// Cluster is the test cluster as the driver names it.
func (p *Pool) Cluster() ceph.Cluster { return p.Env.Cluster(p.ClusterID) }

// Secrets are the admin credentials in the ceph-csi Secret shape.
func (p *Pool) Secrets() map[string]string {
	return map[string]string{"userID": p.Env.Admin.User, "userKey": p.Env.Admin.Key}
}

// CreateReq asks for a 1 GiB mount volume named name in the pool, with the
// test's prefix.
func (p *Pool) CreateReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
		Parameters:    map[string]string{"clusterID": p.ClusterID, "pool": p.Env.Pool, "volumeNamePrefix": p.Prefix, "csi.storage.k8s.io/pvc/name": name, "csi.storage.k8s.io/pvc/namespace": "e2e"},
		Secrets:       p.Secrets(),
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	}
}

// DeleteReq deletes the volume id with the admin credentials.
func (p *Pool) DeleteReq(id string) *csi.DeleteVolumeRequest {
	return &csi.DeleteVolumeRequest{VolumeId: id, Secrets: p.Secrets()}
}

// ImageName is the image part of a volume ID ("" for an ID the driver
// cannot have made).
func ImageName(volumeID string) string {
	id, err := volid.Decode(volumeID)
	if err != nil {
		return ""
	}
	return id.Image
}

// Images lists the test's images in the pool.
func (p *Pool) Images(t testing.TB) []string {
	t.Helper()
	names, err := p.Backend.ListImages(context.Background(), p.Env.Admin, p.Cluster(), p.Env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	return p.mine(names)
}

// Trash lists the names of the test's trash entries.
func (p *Pool) Trash(t testing.TB) []string {
	t.Helper()
	entries, err := p.Backend.ListTrash(context.Background(), p.Env.Admin, p.Cluster(), p.Env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name)
	}
	return p.mine(names)
}

func (p *Pool) mine(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, p.Prefix) {
			out = append(out, n)
		}
	}
	return out
}

// WaitTrashEmpty waits for the mgr (or the driver) to purge the test's
// trash entries and returns those still there at the deadline.
func (p *Pool) WaitTrashEmpty(t testing.TB, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := p.Trash(t)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// OwnerRecord is the image's rbd-csi.owner metadata ("" when missing).
func (p *Pool) OwnerRecord(t testing.TB, image string) string {
	t.Helper()
	return p.Metadata(t, image)["rbd-csi.owner"]
}

// Rados opens the test's pool with librados alone, a path that shares
// nothing with the driver's, for checks that must not trust it.
func (p *Pool) Rados(t testing.TB) (*rados.Conn, *rados.IOContext) {
	return p.RadosWith(t, nil)
}

// RadosWith is Rados with more client options (e.g. rados_osd_op_timeout).
func (p *Pool) RadosWith(t testing.TB, extra map[string]string) (*rados.Conn, *rados.IOContext) {
	t.Helper()
	conn, err := rados.NewConnWithUser(p.Env.Admin.User)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"mon_host": strings.Join(p.Env.Monitors, ","), "key": p.Env.Admin.Key, "keyring": "", "admin_socket": "", "client_mount_timeout": "20"}
	maps.Copy(opts, extra)
	for k, v := range opts {
		if err := conn.SetConfigOption(k, v); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	if err := conn.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Shutdown)
	io, err := conn.OpenIOContext(p.Env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(io.Destroy)
	return conn, io
}
