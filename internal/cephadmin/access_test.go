package cephadmin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAccessPrefersTheEnvironmentThenTheFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "ceph.conf")
	keyring := filepath.Join(dir, "admin.keyring")
	os.WriteFile(conf, []byte("[global]\nfsid = x\nmon host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789] # comment\n"), 0o600)
	os.WriteFile(keyring, []byte("[client.admin]\n\tkey = AQBfilekey==\n\tcaps mon = \"allow *\"\n"), 0o600)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	a, err := LoadAccess(AccessOptions{}, env(map[string]string{EnvMonHost: "10.0.0.9:6789", EnvAdminKey: "AQBenvkey==\n"}))
	if err != nil || a.Cluster.Monitors[0] != "10.0.0.9:6789" || a.Admin.Key != "AQBenvkey==" || a.Admin.User != "admin" {
		t.Fatalf("from env: %+v %v", a, err)
	}
	a, err = LoadAccess(AccessOptions{Conf: conf, Keyring: keyring}, env(map[string]string{EnvMonHost: "10.0.0.9:6789", EnvAdminKey: "k"}))
	if err != nil || a.Cluster.Monitors[0] != "[v2:10.0.0.1:3300,v1:10.0.0.1:6789]" || a.Admin.Key != "AQBfilekey==" {
		t.Fatalf("files named on the command line win: %+v %v", a, err)
	}
	if strings.Contains(a.From, "AQB") {
		t.Errorf("From leaks the key: %s", a.From)
	}
	_, err = LoadAccess(AccessOptions{Conf: conf, Keyring: keyring}, env(map[string]string{EnvAdminID: "kube"}))
	if err == nil || !strings.Contains(err.Error(), "no key for client.kube") {
		t.Errorf("missing entity: %v", err)
	}
	_, err = LoadAccess(AccessOptions{Conf: filepath.Join(dir, "none")}, env(nil))
	if err == nil || !strings.Contains(err.Error(), EnvMonHost) {
		t.Errorf("no conf: %v", err)
	}
}
