package driver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/params"
)

func TestDirCredentials(t *testing.T) {
	key := secrets()[params.SecretUserKey]
	for _, tc := range []struct {
		name    string
		files   map[string]string // under <dir>/c1/
		noFlag  bool
		cluster string
		want    error  // errNoDirSecret, or nil
		wantErr string // a text of any other error
	}{
		{name: "userID and userKey are read, trimmed", files: map[string]string{"userID": "kube\n", "userKey": key + "\n"}, cluster: "c1"},
		{name: "no --secrets-dir is no Secret", noFlag: true, cluster: "c1", want: errNoDirSecret},
		{name: "a cluster without an ID is no Secret", files: map[string]string{"userID": "kube", "userKey": key}, cluster: "", want: errNoDirSecret},
		{name: "no directory for the cluster is no Secret", cluster: "c2", want: errNoDirSecret},
		{name: "a Secret without userKey is unusable and says so", files: map[string]string{"userID": "kube"}, cluster: "c1", wantErr: "has userID but no usable userKey"},
		{name: "a malformed key is unusable, not quoted", files: map[string]string{"userID": "kube", "userKey": "not-a-cephx-key"}, cluster: "c1", wantErr: "unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "c1"), 0o700); err != nil {
				t.Fatal(err)
			}
			for name, v := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, "c1", name), []byte(v), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.noFlag {
				dir = ""
			}
			cr, err := dirCredentials(dir, tc.cluster)
			switch {
			case tc.wantErr != "":
				if err == nil || errors.Is(err, errNoDirSecret) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "not-a-cephx-key") || strings.Contains(err.Error(), key) {
					t.Fatal("the error quotes the key")
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("err %v, want %v", err, tc.want)
			case err == nil && (cr.User != "kube" || cr.Key != key):
				t.Fatalf("read user %q, key of %d bytes", cr.User, len(cr.Key))
			}
		})
	}
}

// secretsDirWith is a --secrets-dir holding one credential (user, key) for
// the test cluster, laid out as the chart mounts it: <dir>/<clusterID>/userID
// and userKey, each with the trailing newline a Secret volume keeps.
func secretsDirWith(t *testing.T, user, key string) string {
	t.Helper()
	dir := t.TempDir()
	mustWriteFile(t, filepath.Join(dir, clusterID, params.SecretUserID), user+"\n")
	mustWriteFile(t, filepath.Join(dir, clusterID, params.SecretUserKey), key+"\n")
	return dir
}
