package cephfake

import (
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/backendtest"
)

const (
	contractKey = "AQBdc1tlAAAAABAAl4m3cMfXTsXX0bO8Z2ZMXA=="
	wrongKey    = "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="
)

func TestBackendContract(t *testing.T) {
	backendtest.Run(t, backendtest.Env{
		Backend:  New("admin", contractKey, "kube"),
		Creds:    ceph.Credentials{User: "admin", Key: contractKey},
		Cluster:  ceph.Cluster{ID: "fake", Monitors: []string{"127.0.0.1:6789"}},
		Pool:     "kube",
		WrongKey: wrongKey,
	})
}
