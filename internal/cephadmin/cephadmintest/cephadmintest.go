// Package cephadmintest gives tests an admin client of the real test cluster
// and cleans up the pools and users they make.
package cephadmintest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
)

// Client is an admin client of the test cluster (cephtest), closed
// when t ends; it skips, saying why, without one.
func Client(t testing.TB) *cephadmin.Client {
	t.Helper()
	env := cephtest.FromEnv(t)
	b := librbd.New(librbd.Options{OpTimeout: 20 * time.Second})
	t.Cleanup(b.Close)
	return &cephadmin.Client{B: b, Access: cephadmin.Access{Cluster: env.Cluster(""), Admin: env.Admin, From: "test"}, Timeout: 20 * time.Second}
}

// Name is a unique pool or user name for one test.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// RemovePoolAndUser deletes what a test made, when it ends.
func RemovePoolAndUser(t testing.TB, c *cephadmin.Client, pool, user string) {
	t.Cleanup(func() {
		ctx := context.Background()
		if pool != "" {
			c.Mon(ctx, map[string]any{"prefix": "osd pool delete", "pool": pool, "pool2": pool, "yes_i_really_really_mean_it": true}, nil)
		}
		if user != "" {
			c.Mon(ctx, map[string]any{"prefix": "auth del", "entity": "client." + user}, nil)
		}
	})
}
