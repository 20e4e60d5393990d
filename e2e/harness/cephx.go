package harness

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
)

// CephCLI runs the ceph CLI as client.admin against the test cluster.
func CephCLI(t testing.TB, env cephtest.Env, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ceph", append([]string{"-c", env.Conf, "--id", env.Admin.User}, args...)...).CombinedOutput()
	return string(out), err
}

// RestrictedUser creates the cephx user client.<user> with the given caps
// (as `ceph auth get-or-create` takes them: "mon", "profile rbd", ...),
// removed when the test ends, and returns its key. It skips the test
// without the ceph CLI.
func RestrictedUser(t testing.TB, env cephtest.Env, user string, caps ...string) string {
	t.Helper()
	if _, err := exec.LookPath("ceph"); err != nil {
		t.Skip("skipping: the ceph CLI is needed to create a restricted cephx user")
	}
	out, err := CephCLI(t, env, append([]string{"auth", "get-or-create-key", "client." + user}, caps...)...)
	if err != nil {
		t.Fatalf("create client.%s: %v: %s", user, err, out)
	}
	t.Cleanup(func() {
		if out, err := CephCLI(t, env, "auth", "rm", "client."+user); err != nil {
			t.Logf("remove client.%s: %v: %s", user, err, out)
		}
	})
	return strings.TrimSpace(out)
}

// PoolUserCaps are the least-privilege caps of a user limited to one pool,
// as the README recommends; withMgr adds the mgr caps that let the
// ceph-mgr take its trash purges and flattens.
func PoolUserCaps(pool string, withMgr bool) []string {
	caps := []string{"mon", "profile rbd", "osd", "profile rbd pool=" + pool}
	if withMgr {
		caps = append(caps, "mgr", "profile rbd pool="+pool)
	}
	return caps
}
