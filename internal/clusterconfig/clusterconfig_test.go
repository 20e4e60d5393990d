package clusterconfig

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// cephCSIConfig is a config.json as ceph-csi documents it, with fields this
// driver does not use.
const cephCSIConfig = `[
  {"clusterID": "b9127830-b0cc-4e34-aa47-9d1a2e9949a8",
   "monitors": ["192.168.1.1:6789", "192.168.1.2:6789"],
   "cephFS": {"subvolumeGroup": "csi"},
   "readAffinity": {"enabled": false}},
  {"clusterID": "ns-cluster", "monitors": ["mon-a.rook-ceph.svc:6789"], "rbd": {"radosNamespace": "tenant-1"}},
  {"clusterID": "v6", "monitors": ["[2001:db8::1]:6789", "[2001:db8::2]"]}
]`

func TestParseReadsCephCSIConfig(t *testing.T) {
	cfg, err := Parse([]byte(cephCSIConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := []ceph.Cluster{
		{ID: "b9127830-b0cc-4e34-aa47-9d1a2e9949a8", Monitors: []string{"192.168.1.1:6789", "192.168.1.2:6789"}},
		{ID: "ns-cluster", Monitors: []string{"mon-a.rook-ceph.svc:6789"}, RadosNamespace: "tenant-1"},
		{ID: "v6", Monitors: []string{"[2001:db8::1]:6789", "[2001:db8::2]"}},
	}
	for _, w := range want {
		got, err := cfg.Lookup(w.ID)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", w.ID, err)
		}
		if got.Key() != w.Key() {
			t.Errorf("Lookup(%q) = %+v, want %+v", w.ID, got, w)
		}
	}
	if n := len(cfg.Clusters()); n != len(want) {
		t.Errorf("Clusters() lists %d clusters, want %d", n, len(want))
	}
}

func TestParseAcceptsAnEmptyList(t *testing.T) {
	cfg, err := Parse([]byte(`[]`))
	if err != nil || len(cfg.Clusters()) != 0 {
		t.Fatalf("Parse([]) = %v, %v", cfg, err)
	}
}

func TestParseRejectsInvalidConfigsSayingWhy(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"not JSON", `clusterID: c1`, "JSON list"},
		{"an object, not a list", `{"clusterID": "c1", "monitors": ["m:6789"]}`, "JSON list"},
		{"monitors not a list", `[{"clusterID": "c1", "monitors": "m:6789"}]`, "JSON list"},
		{"missing clusterID", `[{"monitors": ["m:6789"]}]`, "entry 0: clusterID is empty"},
		{"clusterID with a slash", `[{"clusterID": "a/b", "monitors": ["m:6789"]}]`, `"a/b"`},
		{"clusterID dot-dot", `[{"clusterID": "..", "monitors": ["m:6789"]}]`, `".."`},
		{"clusterID too long", `[{"clusterID": "` + strings.Repeat("a", 37) + `", "monitors": ["m:6789"]}]`, "at most 36"},
		{"no monitors", `[{"clusterID": "c1", "monitors": []}]`, `cluster "c1" has no monitors`},
		{"monitors missing", `[{"clusterID": "c1"}]`, `cluster "c1" has no monitors`},
		{"bad monitor", `[{"clusterID": "c1", "monitors": ["m:6789", "m 2:6789"]}]`, `"m 2:6789"`},
		{"bad port", `[{"clusterID": "c1", "monitors": ["m:67890"]}]`, "bad port"},
		{"bad namespace", `[{"clusterID": "c1", "monitors": ["m"], "rbd": {"radosNamespace": "a/b"}}]`, `radosNamespace "a/b"`},
		{"duplicate clusterID", `[{"clusterID": "c1", "monitors": ["a"]}, {"clusterID": "c2", "monitors": ["b"]}, {"clusterID": "c1", "monitors": ["c"]}]`,
			`entry 2: clusterID "c1" listed twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.json))
			if err == nil {
				t.Fatalf("accepted, got %v", cfg.Clusters())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadReadsTheFileAndNamesItInErrors(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.json"), filepath.Join(dir, "bad.json")
	if err := os.WriteFile(good, []byte(cephCSIConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`[{"clusterID": ""}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := Load(good); err != nil || len(cfg.Clusters()) != 3 {
		t.Errorf("Load(good) = %v, %v", cfg, err)
	}
	if cfg, err := Load(""); err != nil || len(cfg.Clusters()) != 0 {
		t.Errorf(`Load("") = %v, %v; want an empty config`, cfg, err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Load(bad) error %v does not name the file", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error %v does not wrap os.ErrNotExist", err)
	}
}

func TestLookupOfAnUnknownClusterSaysWhatToDo(t *testing.T) {
	cfg, err := Parse([]byte(cephCSIConfig))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.Lookup("nope")
	if !errors.Is(err, ErrUnknownCluster) {
		t.Fatalf("Lookup(nope) error %v does not wrap ErrUnknownCluster", err)
	}
	for _, want := range []string{`"nope"`, "add it to the cluster config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestFindByMonitorsIgnoresOrder(t *testing.T) {
	cfg := mustParse(t, `[{"clusterID": "c1", "monitors": ["a:6789", "b:6789", "c:6789"]}, {"clusterID": "c2", "monitors": ["d:6789"]}]`)
	tests := []struct {
		mons   []string
		wantID string // "" = no match
	}{
		{[]string{"a:6789", "b:6789", "c:6789"}, "c1"},
		{[]string{"c:6789", "a:6789", "b:6789"}, "c1"},
		{[]string{"d:6789"}, "c2"},
		{[]string{"a:6789", "b:6789"}, ""},
		{[]string{"a:6789", "b:6789", "c:6789", "d:6789"}, ""},
		{[]string{"a:3300", "b:6789", "c:6789"}, ""},
		{nil, ""},
	}
	for _, tc := range tests {
		cl, ok := cfg.FindByMonitors(tc.mons)
		if ok != (tc.wantID != "") || cl.ID != tc.wantID {
			t.Errorf("FindByMonitors(%q) = %q, %v; want %q", tc.mons, cl.ID, ok, tc.wantID)
		}
	}
}

func TestFindByMonitorsSkipsNamespacedEntriesAndPicksTheLowestID(t *testing.T) {
	cfg := mustParse(t, `[
		{"clusterID": "ns", "monitors": ["a:6789"], "rbd": {"radosNamespace": "tenant"}},
		{"clusterID": "zz", "monitors": ["a:6789"]},
		{"clusterID": "mm", "monitors": ["a:6789"]},
		{"clusterID": "only-ns", "monitors": ["b:6789"], "rbd": {"radosNamespace": "tenant"}}]`)
	for range 20 { // map order varies between calls
		if cl, ok := cfg.FindByMonitors([]string{"a:6789"}); !ok || cl.ID != "mm" {
			t.Fatalf("FindByMonitors(a) = %q, %v; want mm", cl.ID, ok)
		}
	}
	if cl, ok := cfg.FindByMonitors([]string{"b:6789"}); ok {
		t.Errorf("FindByMonitors(b) = %+v: a legacy StorageClass must not land in a rados namespace", cl)
	}
}

func TestClustersAreOrderedByID(t *testing.T) {
	cfg := mustParse(t, `[{"clusterID": "b", "monitors": ["m"]}, {"clusterID": "c", "monitors": ["m"]}, {"clusterID": "a", "monitors": ["m"]}]`)
	var ids []string
	for _, cl := range cfg.Clusters() {
		ids = append(ids, cl.ID)
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("Clusters() IDs = %q", ids)
	}
}

func TestValidateClusterID(t *testing.T) {
	for _, id := range []string{"c1", "rook-ceph", "b9127830-b0cc-4e34-aa47-9d1a2e9949a8", "a.b_c", "...", strings.Repeat("x", 36)} {
		if err := ValidateClusterID(id); err != nil {
			t.Errorf("ValidateClusterID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "m=a", "a b", "a,b", "ä", strings.Repeat("x", 37)} {
		if err := ValidateClusterID(id); err == nil {
			t.Errorf("ValidateClusterID(%q) accepted", id)
		}
	}
}

func TestParseMonitorsSplitsTheLegacyParameter(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"10.0.0.1:6789", []string{"10.0.0.1:6789"}},
		{"10.0.0.1:6789,10.0.0.2:6789", []string{"10.0.0.1:6789", "10.0.0.2:6789"}},
		{" 10.0.0.1:6789 , mon2 ,", []string{"10.0.0.1:6789", "mon2"}},
		{"[::1]:6789,,[::2]", []string{"[::1]:6789", "[::2]"}},
	}
	for _, tc := range tests {
		got, err := ParseMonitors(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseMonitors(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", " ", ",,", "10.0.0.1:6789,bad host", "10.0.0.1 10.0.0.2", "10.0.0.1;10.0.0.2"} {
		if got, err := ParseMonitors(in); err == nil {
			t.Errorf("ParseMonitors(%q) = %q, accepted", in, got)
		}
	}
}

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(cephCSIConfig))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"clusterID": "c1", "monitors": ["a:6789"]}, {"clusterID": "c1", "monitors": ["b"]}]`))
	f.Add([]byte(`[{"clusterID": "c1", "monitors": ["[::1]:6789"], "rbd": {"radosNamespace": "ns"}}]`))
	f.Add([]byte(`[{"clusterID": "..", "monitors": ["a b"]}]`))
	f.Add([]byte(`{"clusterID": "c1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		for _, cl := range cfg.Clusters() {
			if err := ValidateClusterID(cl.ID); err != nil {
				t.Fatalf("accepted cluster %+v: %v", cl, err)
			}
			if len(cl.Monitors) == 0 {
				t.Fatalf("accepted cluster %+v without monitors", cl)
			}
			for _, m := range cl.Monitors {
				if err := ceph.ValidateMonitor(m); err != nil {
					t.Fatalf("accepted cluster %+v: %v", cl, err)
				}
			}
			if got, err := cfg.Lookup(cl.ID); err != nil || got.Key() != cl.Key() {
				t.Fatalf("Lookup(%q) = %+v, %v; want %+v", cl.ID, got, err, cl)
			}
			reversed := slices.Clone(cl.Monitors)
			slices.Reverse(reversed)
			if found, ok := cfg.FindByMonitors(reversed); cl.RadosNamespace == "" && (!ok || found.ID > cl.ID) {
				t.Fatalf("FindByMonitors(%q) = %+v, %v; want %q or a lower ID", reversed, found, ok, cl.ID)
			}
		}
	})
}
