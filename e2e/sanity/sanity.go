// Package sanity runs the upstream csi-sanity suite in-process against the
// real driver (go-ceph backend, the mapper harness.Mapper names: fuse unless
// $RBDCSI_E2E_MAPPER says krbd or rbd-nbd) and a real Ceph cluster. Ginkgo
// runs one suite per process, so each access type has its own test package
// (mount/, block/) calling Run.
package sanity

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephtest"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/driver"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// Run runs every csi-sanity spec with volumes of the given access type
// ("mount" or "block"), as client.admin through ceph-csi Secrets. With
// RBDCSI_SANITY_ENCRYPTED=1 the StorageClass is encrypted (LUKS2, a KEK in
// every Secret): it needs a node kernel with dm-crypt (make test-kernel).
func Run(t *testing.T, accessType string) {
	env, dir := prepare(t)
	secret := map[string]string{"userID": env.Admin.User, "userKey": env.Admin.Key}
	var extra map[string]string
	if os.Getenv("RBDCSI_SANITY_ENCRYPTED") == "1" {
		extra = map[string]string{"encrypted": "true"}
		secret[kms.DefaultSecretKey] = harness.NewKEK(t)
		t.Log("StorageClass encrypted: \"true\" (RBDCSI_SANITY_ENCRYPTED=1), a KEK in every Secret")
	}
	run(t, env, dir, accessType, extra, writeSecretsFile(t, dir, secret))
}

// RunKeyOnly runs every spec through the classic in-tree setup: a user
// limited to the pool (README caps), every Secret holding only its key,
// and the StorageClass naming the user with adminId. Every call after
// CreateVolume finds the user in the volume or snapshot ID, or in the
// volume context on the node.
func RunKeyOnly(t *testing.T, accessType string) {
	env, dir := prepare(t)
	user := fmt.Sprintf("sanity-%d", os.Getpid())
	key := harness.RestrictedUser(t, env, user, harness.PoolUserCaps(env.Pool, true)...)
	run(t, env, dir, accessType, map[string]string{"adminId": user}, writeSecretsFile(t, dir, map[string]string{"key": key}))
}

// prepare skips the test without a cluster or root, and makes its
// directory.
func prepare(t *testing.T) (cephtest.Env, string) {
	env := cephtest.FromEnv(t)
	if os.Geteuid() != 0 {
		t.Skip("node specs mount filesystems and attach loop devices: run as root")
	}
	return env, t.TempDir()
}

// run serves the driver and runs the suite; extra are more StorageClass
// parameters, secretsFile the csi-test secrets file.
func run(t *testing.T, env cephtest.Env, dir, accessType string, extra map[string]string, secretsFile string) {
	clusters, err := clusterconfig.Parse([]byte(env.ClusterConfigJSON("sanity")))
	if err != nil {
		t.Fatal(err)
	}
	mapperName := harness.Mapper(t)
	backend := librbd.New(librbd.Options{OpTimeout: 20 * time.Second})
	defer backend.Close()
	d, err := driver.New(driver.Options{
		Mode: driver.ModeAll, NodeID: "sanity-node", InstanceID: "sanity-" + accessType + "-" + filepath.Base(dir),
		Clusters: clusters, Backend: backend,
		Node: driver.NodeOptions{StateDir: filepath.Join(dir, "state"), KeyringDir: filepath.Join(dir, "keyrings"), Mapper: mapperName},
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	srv, err := d.Serve("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(5 * time.Second)

	cfg := sanity.NewTestConfig()
	cfg.Address = sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.IdempotentCount = idempotentCount(t)
	cfg.TestVolumeAccessType = accessType
	cfg.TestVolumeSize = 1 << 30
	cfg.TestVolumeExpandSize = 2 << 30
	cfg.TestVolumeParameters = map[string]string{"clusterID": "sanity", "pool": env.Pool, "mounter": mapperName}
	maps.Copy(cfg.TestVolumeParameters, extra)
	// VolumeSnapshotClass parameters: the snapshot images go to the same
	// pool; the snapshot, clone and restore specs run because the driver
	// advertises CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS, GET_SNAPSHOT and
	// CLONE_VOLUME.
	cfg.TestSnapshotParameters = map[string]string{"clusterID": "sanity", "pool": env.Pool}
	// csi-test reads secrets only from a file: a 0600 file in the test's
	// temporary directory, removed when the test ends.
	cfg.SecretsFile = secretsFile
	cfg.IDGen = unknownNodeIDs{}

	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.SkipStrings = skipSpecs()
	reporter.Verbose = testing.Verbose()
	ginkgo.RunSpecs(t, "rbd-csi sanity", suite, reporter)
	sc.Finalize()
	for _, l := range harness.Leftovers(dir) {
		t.Errorf("left behind after the suite: %s", l)
	}
	if mapperName != mapper.Fuse {
		// krbd and rbd-nbd devices live outside dir; the suite runs alone
		// on its node (e2e/kernel's guest), so any mapping is its own.
		for _, l := range append(harness.KernelMappings(""), harness.CryptDevices()...) {
			t.Errorf("left behind after the suite: %s", l)
		}
	}
}

// unknownNodeIDs is csi-test's ID generator but for node IDs: csi-sanity
// asks ControllerPublishVolume for one of them to answer NotFound ("should
// fail when the node does not exist"), and the driver recognises node IDs
// only by form (Kubernetes node names, package attach): upper case and '_'
// are no node name.
type unknownNodeIDs struct{ sanity.DefaultIDGenerator }

func (unknownNodeIDs) GenerateUniqueValidNodeID() string {
	return "Not_A_Node_" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// skipSpecs lists specs to skip, from SANITY_SKIP (comma-separated regular
// expressions), for debugging; by default every spec runs.
func skipSpecs() []string {
	if s, ok := os.LookupEnv("SANITY_SKIP"); ok {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	return nil
}

// writeSecretsFile gives every call the same Secret.
func writeSecretsFile(t *testing.T, dir string, secret map[string]string) string {
	t.Helper()
	fields := slices.Sorted(maps.Keys(secret))
	var b strings.Builder
	for _, op := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "ControllerExpandVolumeSecret",
		"ControllerValidateVolumeCapabilitiesSecret", "ControllerPublishVolumeSecret", "ControllerUnpublishVolumeSecret",
		"NodeStageVolumeSecret", "NodePublishVolumeSecret",
		"CreateSnapshotSecret", "DeleteSnapshotSecret", "ListSnapshotsSecret", "GetSnapshotSecret"} {
		fmt.Fprintf(&b, "%s:\n", op)
		for _, k := range fields {
			fmt.Fprintf(&b, "  %s: %q\n", k, secret[k])
		}
	}
	path := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// idempotentCount is how often csi-sanity repeats each idempotent call: 10,
// or RBDCSI_SANITY_IDEMPOTENT_COUNT (make test-kernel in CI lowers it, as
// every call costs seconds under emulation; every spec still runs).
func idempotentCount(t *testing.T) int {
	v := os.Getenv("RBDCSI_SANITY_IDEMPOTENT_COUNT")
	if v == "" {
		return 10
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("RBDCSI_SANITY_IDEMPOTENT_COUNT=%q: want a whole number of at least 1", v)
	}
	return n
}
