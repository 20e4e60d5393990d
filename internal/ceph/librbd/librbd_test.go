package librbd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rbd"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
)

// The ceph package spells librbd's feature bits out so that it builds
// without cgo; they must agree with librbd's.
func TestFeatureBitsMatchLibrbd(t *testing.T) {
	tests := []struct {
		ours   ceph.Features
		librbd uint64
	}{
		{ceph.FeatureLayering, rbd.FeatureLayering},
		{ceph.FeatureStripingV2, rbd.FeatureStripingV2},
		{ceph.FeatureExclusiveLock, rbd.FeatureExclusiveLock},
		{ceph.FeatureObjectMap, rbd.FeatureObjectMap},
		{ceph.FeatureFastDiff, rbd.FeatureFastDiff},
		{ceph.FeatureDeepFlatten, rbd.FeatureDeepFlatten},
		{ceph.FeatureJournaling, rbd.FeatureJournaling},
		{ceph.FeatureDataPool, rbd.FeatureDataPool},
		{ceph.FeatureOperations, rbd.FeatureOperations},
		{ceph.FeatureMigrating, rbd.FeatureMigrating},
	}
	for _, tc := range tests {
		if uint64(tc.ours) != tc.librbd {
			t.Errorf("%s: ours %#x, librbd %#x", tc.ours, uint64(tc.ours), tc.librbd)
		}
	}
}

func testBackend(t *testing.T, opts Options) (*Backend, cephtest.Env, ceph.Cluster) {
	t.Helper()
	env := cephtest.FromEnv(t)
	b := New(opts)
	t.Cleanup(b.Close)
	return b, env, env.Cluster("t")
}

func TestIdleConnectionsAreClosedAndReopened(t *testing.T) {
	b, env, cl := testBackend(t, Options{IdleTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	if _, err := b.PoolID(ctx, env.Admin, cl, env.Pool); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PoolID(ctx, env.Admin, cl, env.Pool); err != nil {
		t.Fatal(err)
	}
	if n := b.OpenConnections(); n != 1 {
		t.Fatalf("%d connections after two calls with one identity, want 1 (reused)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.OpenConnections() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := b.OpenConnections(); n != 0 {
		t.Fatalf("%d connections still open after the idle timeout", n)
	}
	if _, err := b.PoolID(ctx, env.Admin, cl, env.Pool); err != nil {
		t.Fatalf("call after the idle close: %v", err)
	}
}

func TestImageLifecycleAndOwnerRecord(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("librbd-test-%d", time.Now().UnixNano())}
	spec := ceph.ImageSpec{Size: 64 << 20, Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock, Metadata: map[string]string{"rbd-csi.owner": `{"name":"x"}`}}
	if err := b.CreateImage(ctx, env.Admin, ref, spec); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateImage(ctx, env.Admin, ref, spec); !errors.Is(err, ceph.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	info, err := b.StatImage(ctx, env.Admin, ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != spec.Size || info.Features&ceph.UserFeatures != spec.Features || info.Metadata["rbd-csi.owner"] != `{"name":"x"}` {
		t.Fatalf("stat: %+v", info)
	}
	if err := b.ResizeImage(ctx, env.Admin, ref, 128<<20); err != nil {
		t.Fatal(err)
	}
	if ws, err := b.Watchers(ctx, env.Admin, ref); err != nil || len(ws) != 0 {
		t.Fatalf("watchers of an unused image: %v, %v", ws, err)
	}
	ids, err := b.TrashImage(ctx, env.Admin, ref)
	if err != nil || !slices.Equal(ids, []string{info.ID}) {
		t.Fatalf("trash: ids %q (image id %q), %v", ids, info.ID, err)
	}
	id := ids[0]
	if _, err := b.StatImage(ctx, env.Admin, ref); !errors.Is(err, ceph.ErrNotFound) {
		t.Fatalf("stat after trash: %v, want ErrNotFound", err)
	}
	if again, err := b.TrashImage(ctx, env.Admin, ref); err != nil || !slices.Equal(again, ids) {
		t.Fatalf("trash twice: %q, %v; want the entry %q", again, err, id)
	}
	if err := b.PurgeTrash(ctx, env.Admin, cl, env.Pool, id, false); err != nil {
		t.Fatal(err)
	}
	entries, err := b.ListTrash(ctx, env.Admin, cl, env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.ID == id {
			t.Fatalf("trash entry %s still there after purge", id)
		}
	}
}

func TestPoolUsageReportsSpaceAndQuota(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	u, err := b.PoolUsage(context.Background(), env.Admin, cl, env.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if u.MaxAvail == 0 || u.Available() == 0 {
		t.Fatalf("pool usage %+v: a fresh test pool has room", u)
	}
	if _, err := b.PoolUsage(context.Background(), env.Admin, cl, "no-such-pool"); !errors.Is(err, ceph.ErrNotFound) {
		t.Fatalf("missing pool: %v, want ErrNotFound", err)
	}
}

func TestWrongKeyIsAnAuthError(t *testing.T) {
	b, env, cl := testBackend(t, Options{OpTimeout: 10 * time.Second})
	bad := ceph.Credentials{User: "admin", Key: "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="}
	_, err := b.PoolID(context.Background(), bad, cl, env.Pool)
	if !errors.Is(err, ceph.ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	if b.OpenConnections() != 0 {
		t.Fatal("a failed connection stays in the pool")
	}
}

func TestUnreachableMonitorsReturnAtTheDeadline(t *testing.T) {
	b := New(Options{OpTimeout: 30 * time.Second})
	defer b.Close()
	cl := ceph.Cluster{ID: "void", Monitors: []string{"127.0.0.1:1"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := b.PoolID(ctx, ceph.Credentials{User: "admin", Key: "AQBdc1tlAAAAABAAqqqqqqqqqqqqqqqqqqqqqq=="}, cl, "kube")
	if !errors.Is(err, ceph.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("returned after %v with a 1 s deadline", took)
	}
}

// Calls whose caller gave up while librados still waits (a monitor command
// during a monitor outage) must not pile up without bound: past the limit
// a call fails at once as unavailable, and the count drains as the stuck
// calls return.
func TestStrandedCallsAreBoundedAndDrain(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	release := make(chan struct{})
	stuck := func(*conn) error { <-release; return nil }
	// Connect first, so that the short deadlines below strand calls rather
	// than expire while connecting.
	if err := b.run(context.Background(), "connect", "t", cl, env.Admin, func(*conn) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range maxStranded {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		err := b.run(ctx, "stuck", "t", cl, env.Admin, stuck)
		cancel()
		if !errors.Is(err, ceph.ErrTimeout) {
			t.Fatalf("stuck call %d: %v, want a timeout", i, err)
		}
	}
	start := time.Now()
	err := b.run(context.Background(), "one more", "t", cl, env.Admin, func(*conn) error { return nil })
	if !errors.Is(err, ceph.ErrUnavailable) {
		t.Fatalf("call past the limit: %v, want unavailable", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("refusal took %v; it must not wait", time.Since(start))
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := b.run(context.Background(), "after", "t", cl, env.Admin, func(*conn) error { return nil })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still refused after the stuck ones returned: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connection the cluster blocklists must leave the pool at once: the next
// call gets a fresh client instead of failing until the idle reaper runs.
func TestBlocklistedConnectionIsReplaced(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	admin := New(Options{})
	t.Cleanup(admin.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("librbd-blocklist-%d", time.Now().UnixNano())}
	if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.RemovePartialImage(context.Background(), env.Admin, ref) })
	first := onlyConn(t, b)
	addr, err := first.rc.GetAddrs()
	if err != nil {
		t.Fatal(err)
	}
	addr = clientAddr(addr)
	blocklist(ctx, t, admin, env, cl, "add", addr)
	t.Cleanup(func() { blocklist(context.Background(), t, admin, env, cl, "rm", addr) })

	// The first call after the blocklist may fail (it is how the client
	// learns); the one after it must succeed on a new connection.
	var errs []error
	for i := 0; i < 2; i++ {
		if _, err := b.StatImage(ctx, env.Admin, ref); err != nil {
			errs = append(errs, err)
			continue
		}
		if len(errs) > 1 {
			t.Fatalf("more than one call failed after the blocklist: %v", errs)
		}
		if got := onlyConn(t, b); got == first {
			t.Fatal("StatImage succeeded on the blocklisted connection")
		}
		t.Logf("after blocklisting %s: errors %v, then success on a new connection", addr, errs)
		return
	}
	t.Fatalf("no call succeeded after the blocklist: %v", errs)
}

func onlyConn(t *testing.T, b *Backend) *conn {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.conns) != 1 {
		t.Fatalf("%d pooled connections, want 1", len(b.conns))
	}
	for _, c := range b.conns {
		return c
	}
	return nil
}

// clientAddr turns rados_getaddrs' "[v2:ip:port/nonce,v1:...]" into the
// "ip:port/nonce" that `osd blocklist` takes.
func clientAddr(addrs string) string {
	a := strings.Trim(addrs, "[]")
	a, _, _ = strings.Cut(a, ",")
	if i := strings.Index(a, ":"); i >= 0 && strings.HasPrefix(a, "v") {
		a = a[i+1:]
	}
	return a
}

func blocklist(ctx context.Context, t *testing.T, b *Backend, env cephtest.Env, cl ceph.Cluster, op, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := map[string]any{"prefix": "osd blocklist", "blocklistop": op, "addr": addr}
	if _, err := b.MonCommand(ctx, env.Admin, cl, cmd); err != nil {
		t.Fatalf("osd blocklist %s %s: %v", op, addr, err)
	}
}

func TestStatImageReportsTheClusterFSID(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	want := os.Getenv("CEPH_FSID")
	if want == "" {
		t.Skip("CEPH_FSID is unset (e2e/run-tests.sh exports it with the cluster)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref := ceph.ImageRef{Cluster: cl, Pool: env.Pool, Name: fmt.Sprintf("librbd-fsid-%d", time.Now().UnixNano())}
	if err := b.CreateImage(ctx, env.Admin, ref, ceph.ImageSpec{Size: 16 << 20, Features: ceph.FeatureLayering}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.RemovePartialImage(context.Background(), env.Admin, ref) })
	info, err := b.StatImage(ctx, env.Admin, ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.ClusterFSID != want {
		t.Fatalf("cluster fsid %q, want %q", info.ClusterFSID, want)
	}
}
