package setup

import (
	"bytes"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

var update = flag.Bool("update", false, "rewrite the golden files (testdata/manifests.golden.yaml, charts/rbd-csi/ci/setup-values.yaml)")

func sampleManifest() Manifest {
	return Manifest{
		ClusterID: "1b767d01-4012-4593-9ca9-79007570bf1e", Monitors: []string{"v1:10.0.0.1:6789", "v1:10.0.0.2:6789"},
		Pool: "kube", User: "kube", Namespace: "rbd-csi", ConfigMap: "rbd-csi-config", Secret: "rbd-csi-kube",
		StorageClass: "rbd", SnapshotClass: "rbd", Driver: "rbd.csi.dev", Features: ceph.FeatureLayering, FsType: "ext4",
	}
}

// The golden files are what `rbd-csi setup --with-secret` prints for the
// sample, as manifests and as chart values. e2e/k8s/chart-check.sh
// validates both against the Kubernetes schemas (the values through
// helm lint --strict and a render), so a change here is checked there too.
func TestOutputMatchesTheGoldenFilesChartCheckValidates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		golden string
		write  func(Manifest, io.Writer) error
	}{
		{"manifests", "testdata/manifests.golden.yaml", Manifest.Write},
		{"helm values", "../../charts/rbd-csi/ci/setup-values.yaml", Manifest.WriteHelmValues},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := sampleManifest()
			m.Key = "AQBsampleNotARealKey0000000000000000000=="
			var b bytes.Buffer
			if err := tc.write(m, &b); err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(tc.golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tc.golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/setup -update)", err)
			}
			if b.String() != string(want) {
				t.Errorf("%s differs from %s (rerun with -update if intended):\n%s", tc.name, tc.golden, b.String())
			}
		})
	}
}

func TestManifestPrintsNoSecretWithoutAKey(t *testing.T) {
	var b bytes.Buffer
	if err := sampleManifest().Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "kind: Secret") || strings.Contains(out, "userKey:") {
		t.Errorf("Secret printed without --with-secret:\n%s", out)
	}
	if !strings.Contains(out, "ceph auth get-key client.kube") {
		t.Errorf("no hint how to make the Secret:\n%s", out)
	}
}

func TestManifestRefusesWhatTheDriverWouldRefuse(t *testing.T) {
	for name, edit := range map[string]func(*Manifest){
		"bad clusterID":     func(m *Manifest) { m.ClusterID = "a/b" },
		"bad monitor":       func(m *Manifest) { m.Monitors = []string{"::1:6789"} },
		"no monitors":       func(m *Manifest) { m.Monitors = nil },
		"unknown features":  func(m *Manifest) { m.Features = ceph.FeatureDataPool },
		"bad fstype":        func(m *Manifest) { m.FsType = "btrfs" },
		"upper-case secret": func(m *Manifest) { m.Secret = "Rbd" },
		"empty namespace":   func(m *Manifest) { m.Namespace = "" },
	} {
		t.Run(name, func(t *testing.T) {
			m := sampleManifest()
			edit(&m)
			if err := m.Write(&bytes.Buffer{}); err == nil {
				t.Error("accepted")
			}
		})
	}
}
