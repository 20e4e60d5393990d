package librbd

import (
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph/backendtest"
)

// TestBackendContract runs the suite cephfake also passes against the real
// cluster (skipped, saying why, without one; make test starts one).
func TestBackendContract(t *testing.T) {
	b, env, cl := testBackend(t, Options{})
	backendtest.Run(t, backendtest.Env{Backend: b, Creds: env.Admin, Cluster: cl, Pool: env.Pool, WrongKey: unknownCephxKey(t)})
}

// unknownCephxKey is a well-formed cephx key (type, creation time, length,
// 16 secret bytes) that no cluster knows.
func unknownCephxKey(t *testing.T) string {
	t.Helper()
	blob := make([]byte, 28)
	blob[0], blob[10] = 1, 16
	if _, err := rand.Read(blob[12:]); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(blob)
}
