package setup

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

// Manifest describes the Kubernetes objects to print.
type Manifest struct {
	ClusterID string
	Monitors  []string
	Pool      string
	User      string
	// Key is printed in the Secret only when not empty: the operator asked
	// for the Secret (--with-secret). Without, a comment says how to make it.
	Key           string
	Namespace     string // the driver's namespace: ConfigMap and Secret
	ConfigMap     string
	Secret        string
	StorageClass  string
	SnapshotClass string
	Driver        string
	Features      ceph.Features
	FsType        string
}

// Validate checks the manifest with the driver's own rules, so what is
// printed is what the driver accepts.
func (m Manifest) Validate() error {
	entry := clusterconfig.Entry{ClusterID: m.ClusterID, Monitors: m.Monitors}
	data, err := json.Marshal([]clusterconfig.Entry{entry})
	if err != nil {
		return err
	}
	if _, err := clusterconfig.Parse(data); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	if _, err := params.ParseVolume(m.storageClassParams()); err != nil {
		return fmt.Errorf("StorageClass: %w", err)
	}
	for _, n := range []struct{ what, name string }{
		{"--namespace", m.Namespace}, {"--configmap", m.ConfigMap}, {"--secret-name", m.Secret},
		{"--storageclass", m.StorageClass}, {"--snapshotclass", m.SnapshotClass}, {"--driver-name", m.Driver},
	} {
		if !kubeName.MatchString(n.name) || len(n.name) > 63 {
			return fmt.Errorf("%s %q: a Kubernetes name is 1 to 63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", n.what, n.name)
		}
	}
	return nil
}

// kubeName is a DNS-1123 name, which every object printed here accepts.
var kubeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

func (m Manifest) storageClassParams() map[string]string {
	p := map[string]string{
		params.KeyClusterID:     m.ClusterID,
		params.KeyPool:          m.Pool,
		params.KeyImageFeatures: m.Features.String(),
		params.KeyFsTypeCSI:     m.FsType,
	}
	for _, op := range []string{"provisioner", "controller-expand", "controller-publish", "node-stage"} {
		p["csi.storage.k8s.io/"+op+"-secret-name"] = m.Secret
		p["csi.storage.k8s.io/"+op+"-secret-namespace"] = m.Namespace
	}
	return p
}

// q quotes a YAML scalar: a JSON string is a valid YAML double-quoted one.
func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Write prints the ConfigMap, the Secret (or how to make it), the
// StorageClass and the VolumeSnapshotClass as one YAML stream.
func (m Manifest) Write(w io.Writer) error {
	if err := m.Validate(); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# rbd-csi setup: pool " + m.Pool + ", user client." + m.User + ". Apply with kubectl apply -f.\n")
	m.writeConfigMap(&b)
	m.writeSecret(&b)
	m.writeStorageClass(&b)
	m.writeSnapshotClass(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (m Manifest) writeConfigMap(b *strings.Builder) {
	entry := map[string]any{"clusterID": m.ClusterID, "monitors": m.Monitors, "rbd": map[string]string{"radosNamespace": ""}}
	js, _ := json.MarshalIndent([]any{entry}, "    ", "  ")
	fmt.Fprintf(b, `---
# The driver's cluster list (the chart's ConfigMap, value "clusters"). It
# replaces the list: with several clusters, add this entry to the others.
apiVersion: v1
kind: ConfigMap
metadata:
  name: %s
  namespace: %s
data:
  config.json: |-
    %s
`, q(m.ConfigMap), q(m.Namespace), js)
}

func (m Manifest) writeSecret(b *strings.Builder) {
	if m.Key == "" {
		fmt.Fprintf(b, `---
# Secret %s/%s is not printed: it holds client.%s's key. Make it with
#   kubectl create secret generic %s -n %s --from-literal=userID=%s \
#     --from-file=userKey=<(ceph auth get-key client.%s)
# or rerun rbd-csi setup with --with-secret.
`, m.Namespace, m.Secret, m.User, m.Secret, m.Namespace, m.User, m.User)
		return
	}
	fmt.Fprintf(b, `---
apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: %s
type: Opaque
stringData:
  userID: %s
  userKey: %s
`, q(m.Secret), q(m.Namespace), q(m.User), q(m.Key))
}

func (m Manifest) writeStorageClass(b *strings.Builder) {
	fmt.Fprintf(b, `---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: %s
provisioner: %s
reclaimPolicy: Delete
allowVolumeExpansion: true
volumeBindingMode: Immediate
parameters:
`, q(m.StorageClass), q(m.Driver))
	writeMap(b, "  ", m.storageClassParams())
}

func (m Manifest) writeSnapshotClass(b *strings.Builder) {
	fmt.Fprintf(b, `---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: %s
driver: %s
deletionPolicy: Delete
parameters:
`, q(m.SnapshotClass), q(m.Driver))
	writeMap(b, "  ", map[string]string{
		params.KeyClusterID:                               m.ClusterID,
		"csi.storage.k8s.io/snapshotter-secret-name":      m.Secret,
		"csi.storage.k8s.io/snapshotter-secret-namespace": m.Namespace,
	})
}

// writeMap prints a string map sorted by key, as helm does.
func writeMap(b *strings.Builder, indent string, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "%s%s: %s\n", indent, q(k), q(m[k]))
	}
}

// WriteHelmValues prints the same objects as chart values (clusters,
// secrets, storageClasses, volumeSnapshotClasses) for `helm upgrade
// --values`: with the chart installed, its ConfigMap is the chart's to
// write, and an upgrade would undo a ConfigMap applied by hand.
func (m Manifest) WriteHelmValues(w io.Writer) error {
	if err := m.Validate(); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# rbd-csi setup: pool %s, user client.%s. Give to helm with --values\n", m.Pool, m.User)
	b.WriteString("# (the lists replace the chart's: with several clusters, merge them).\n")
	fmt.Fprintf(&b, "driverName: %s\nclusters:\n  - clusterID: %s\n    monitors:\n", q(m.Driver), q(m.ClusterID))
	for _, mon := range m.Monitors {
		fmt.Fprintf(&b, "      - %s\n", q(mon))
	}
	if m.Key == "" {
		fmt.Fprintf(&b, "# secrets: not printed (client.%s's key); rerun with --with-secret, or make\n# Secret %s/%s as the comment of the manifests output says.\n", m.User, m.Namespace, m.Secret)
	} else {
		fmt.Fprintf(&b, "secrets:\n  - name: %s\n    namespace: %s\n    userID: %s\n    userKey: %s\n", q(m.Secret), q(m.Namespace), q(m.User), q(m.Key))
	}
	fmt.Fprintf(&b, "storageClasses:\n  - name: %s\n    secretRef: {name: %s, namespace: %s}\n    parameters:\n", q(m.StorageClass), q(m.Secret), q(m.Namespace))
	writeMap(&b, "      ", map[string]string{
		params.KeyClusterID: m.ClusterID, params.KeyPool: m.Pool,
		params.KeyImageFeatures: m.Features.String(), params.KeyFsTypeCSI: m.FsType,
	})
	fmt.Fprintf(&b, "volumeSnapshotClasses:\n  - name: %s\n    secretRef: {name: %s, namespace: %s}\n    parameters:\n", q(m.SnapshotClass), q(m.Secret), q(m.Namespace))
	writeMap(&b, "      ", map[string]string{params.KeyClusterID: m.ClusterID})
	_, err := io.WriteString(w, b.String())
	return err
}
