// Package cephtest gives tests the coordinates of the real Ceph cluster the
// test runner started (e2e/run-tests.sh exports them), and skips, with the
// reason printed, when there is none.
package cephtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Env is a test cluster.
type Env struct {
	Monitors []string
	Admin    ceph.Credentials
	Pool     string
	// DataPool is a second pool usable as a data pool ("" if none).
	DataPool string
	// Conf is the cluster's ceph.conf, for CLI tools (rbd, rbd-fuse).
	Conf string
	// Dir is the cluster directory (logs, pid files).
	Dir string
}

// FromEnv reads CEPH_MON_HOST, CEPH_ADMIN_KEY, CEPH_POOL, CEPH_CONF and
// CEPH_DIR, or skips the test when the first two are unset.
func FromEnv(t testing.TB) Env {
	t.Helper()
	mon, key := os.Getenv("CEPH_MON_HOST"), os.Getenv("CEPH_ADMIN_KEY")
	if mon == "" || key == "" {
		t.Skip("no Ceph cluster: CEPH_MON_HOST and CEPH_ADMIN_KEY are unset; run `make test`, which starts one (e2e/ceph/up.sh)")
	}
	e := Env{
		Monitors: strings.Split(mon, ","),
		Admin:    ceph.Credentials{User: "admin", Key: key},
		Pool:     envOr("CEPH_POOL", "kube"),
		DataPool: os.Getenv("CEPH_DATA_POOL_NAME"),
		Conf:     os.Getenv("CEPH_CONF"),
		Dir:      os.Getenv("CEPH_DIR"),
	}
	if e.Conf == "" && e.Dir != "" {
		e.Conf = filepath.Join(e.Dir, "ceph.conf")
	}
	return e
}

// Cluster is the test cluster as the driver's cluster config would name it.
func (e Env) Cluster(id string) ceph.Cluster {
	return ceph.Cluster{ID: id, Monitors: e.Monitors}
}

// ClusterConfigJSON renders a cluster config naming the test cluster id.
func (e Env) ClusterConfigJSON(id string) string {
	return `[{"clusterID":"` + id + `","monitors":["` + strings.Join(e.Monitors, `","`) + `"]}]`
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
