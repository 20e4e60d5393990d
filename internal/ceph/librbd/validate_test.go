package librbd

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Connections skip librbd's per-create pool check once a pool has passed
// it; a pool that never did must still be checked, and refused when it
// cannot hold RBD images.
func TestCreateChecksAPoolUntilItIsValidated(t *testing.T) {
	tests := []struct {
		name string
		// poolSnapshot puts the pool in pool-snapshot mode, which RBD's
		// self-managed snapshots cannot share: librbd's check refuses it.
		poolSnapshot bool
		// init runs `rbd pool init`'s equivalent first, whose check must
		// run too.
		init       bool
		wantMarker bool
	}{
		{name: "a new pool is validated by its first create", wantMarker: true},
		{name: "a new pool is validated by its init", init: true, wantMarker: true},
		{name: "a pool with pool snapshots is refused", poolSnapshot: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, env, cl := testBackend(t, Options{OpTimeout: 20 * time.Second})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			pool := fmt.Sprintf("validate-%d-%d", i, time.Now().UnixNano())
			mon := func(cmd map[string]any) {
				t.Helper()
				if _, err := b.MonCommand(ctx, env.Admin, cl, cmd); err != nil {
					t.Fatalf("%v: %v", cmd["prefix"], err)
				}
			}
			mon(map[string]any{"prefix": "osd pool create", "pool": pool, "pg_num": 8})
			t.Cleanup(func() {
				cmd := map[string]any{"prefix": "osd pool delete", "pool": pool, "pool2": pool, "yes_i_really_really_mean_it": true}
				_, _ = b.MonCommand(context.Background(), env.Admin, cl, cmd)
			})
			mon(map[string]any{"prefix": "osd pool application enable", "pool": pool, "app": "rbd", "yes_i_really_mean_it": true})
			if tc.poolSnapshot {
				mon(map[string]any{"prefix": "osd pool mksnap", "pool": pool, "snap": "whole-pool"})
			}
			if tc.init {
				if err := b.PoolInit(ctx, env.Admin, cl, pool); err != nil {
					t.Fatalf("pool init: %v", err)
				}
				if got := readRBDInfo(t, b, env.Admin, cl, pool); got != validatedMarker {
					t.Fatalf("rbd_info holds %q after the pool init; want the validation marker", got)
				}
			}
			spec := ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}
			for n := 1; n <= 2; n++ {
				ref := ceph.ImageRef{Cluster: cl, Pool: pool, Name: fmt.Sprintf("image-%d", n)}
				err := b.CreateImage(ctx, env.Admin, ref, spec)
				switch {
				case tc.poolSnapshot && err == nil:
					t.Fatalf("create %d in a pool with pool snapshots succeeded; want librbd's check to refuse it", n)
				case !tc.poolSnapshot && err != nil:
					t.Fatalf("create %d: %v", n, err)
				}
			}
			if got := readRBDInfo(t, b, env.Admin, cl, pool); (got == validatedMarker) != tc.wantMarker {
				t.Errorf("rbd_info holds %q after the creates; want the validation marker: %v", got, tc.wantMarker)
			}
		})
	}
}

// readRBDInfo returns the data of pool's rbd_info object ("" if none).
func readRBDInfo(t *testing.T, b *Backend, cr ceph.Credentials, cl ceph.Cluster, pool string) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := rawIOContext(t, b, cr, cl, pool).Read("rbd_info", buf, 0)
	if isErrno(err, syscall.ENOENT) {
		return ""
	}
	if err != nil {
		t.Fatalf("read rbd_info of %s: %v", pool, err)
	}
	return string(buf[:n])
}
