package setup

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

var update = flag.Bool("update", false, "rewrite testdata/manifests.golden.yaml")

func sampleManifest() Manifest {
	return Manifest{
		ClusterID: "1b767d01-4012-4593-9ca9-79007570bf1e", Monitors: []string{"v1:10.0.0.1:6789", "v1:10.0.0.2:6789"},
		Pool: "kube", User: "kube", Namespace: "rbd-csi", ConfigMap: "rbd-csi-config", Secret: "rbd-csi-kube",
		StorageClass: "rbd", SnapshotClass: "rbd", Driver: "rbd.csi.dev", Features: ceph.FeatureLayering, FsType: "ext4",
	}
}

// The golden file is what `rbd-csi setup --with-secret` prints for the
// sample; e2e/k8s/chart-check.sh validates it against the Kubernetes
// schemas, so a change here is checked there too.
func TestManifestMatchesTheGoldenFileChartCheckValidates(t *testing.T) {
	m := sampleManifest()
	m.Key = "AQBsampleNotARealKey0000000000000000000=="
	var b bytes.Buffer
	if err := m.Write(&b); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/manifests.golden.yaml"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/setup -update)", err)
	}
	if b.String() != string(want) {
		t.Errorf("manifest differs from %s (rerun with -update if intended):\n%s", golden, b.String())
	}
}

// The chart's ci/ values are linted (helm lint --strict, values.schema.json)
// and rendered through kubeconform by e2e/k8s/chart-check.sh; this one is
// what `rbd-csi setup --format helm-values --with-secret` prints.
func TestHelmValuesMatchTheChartCIValuesFile(t *testing.T) {
	m := sampleManifest()
	m.Key = "AQBsampleNotARealKey0000000000000000000=="
	var b bytes.Buffer
	if err := m.WriteHelmValues(&b); err != nil {
		t.Fatal(err)
	}
	const golden = "../../charts/rbd-csi/ci/setup-values.yaml"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/setup -update)", err)
	}
	if b.String() != string(want) {
		t.Errorf("helm values differ from %s (rerun with -update if intended):\n%s", golden, b.String())
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
