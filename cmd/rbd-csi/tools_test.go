package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/cephadmin/cephadmintest"
	"github.com/rbd-csi/rbd-csi/internal/doctor"
)

func TestDoctorJSONParsesAndItsExitStatusSaysWhetherSomethingWouldFail(t *testing.T) {
	cephadmintest.Client(t) // skips without a cluster
	for _, tc := range []struct {
		kernels  string
		wantRC   int
		wantFail bool
	}{
		{"3.10", exitFindings, true},
		{"6.1", exitOK, false},
	} {
		var out, errOut bytes.Buffer
		rc := runDoctor([]string{"--pool", "kube", "--kernels", tc.kernels, "-o", "json"}, &out, &errOut)
		if rc != tc.wantRC {
			t.Errorf("kernel %s: exit %d, want %d; stderr %s", tc.kernels, rc, tc.wantRC, errOut.String())
		}
		var r doctor.Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("kernel %s: -o json is not JSON: %v\n%s", tc.kernels, err, out.String())
		}
		if (r.Failed > 0) != tc.wantFail || len(r.Findings) == 0 {
			t.Errorf("kernel %s: %+v", tc.kernels, r)
		}
		for _, f := range r.Findings {
			if f.Severity == doctor.Fail && len(f.Fix) == 0 {
				t.Errorf("kernel %s: %s has no fix", tc.kernels, f.Check)
			}
		}
	}
}

func TestSetupPrintsTheKeyOnlyInTheSecretAskedFor(t *testing.T) {
	c := cephadmintest.Client(t)
	pool, user := cephadmintest.Name("setup"), cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, pool, user)
	args := []string{"--pool", pool, "--user", user, "--cluster-id", "test", "--kernels", "6.1"}

	var out, errOut bytes.Buffer
	if rc := runSetup(args, &out, &errOut); rc != exitOK {
		t.Fatalf("setup: exit %d: %s", rc, errOut.String())
	}
	key, err := c.UserKey(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), key) || strings.Contains(errOut.String(), key) {
		t.Fatal("the key was printed without --with-secret")
	}
	for _, want := range []string{"kind: ConfigMap", "kind: StorageClass", "kind: VolumeSnapshotClass", `"pool": "` + pool + `"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q", want)
		}
	}

	out.Reset()
	errOut.Reset()
	if rc := runSetup(append(args, "--with-secret"), &out, &errOut); rc != exitOK {
		t.Fatalf("second setup: exit %d: %s", rc, errOut.String())
	}
	if !strings.Contains(out.String(), `userKey: "`+key+`"`) {
		t.Errorf("--with-secret: no Secret with the key")
	}
	if strings.Contains(errOut.String(), key) {
		t.Error("the key reached stderr")
	}
	if !strings.Contains(errOut.String(), "nothing to change") {
		t.Errorf("second run should say nothing changed: %s", errOut.String())
	}
}

func TestSubcommandsRefuseBadFlagsWithUsageStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--pool", "kube", "--user", "client.kube"},
		{"--pool", "kube", "--user", "kube", "--quota", "1.5Gi"},
		{"--pool", "kube", "--user", "kube", "-o", "yaml"},
		{"--pool", "kube", "--user", "admin"},
		{"--pool", "kube", "--user", "kube", "extra"},
		{"--pool", "kube", "--user", "kube", "--format", "json"},
	} {
		var out, errOut bytes.Buffer
		if rc := runSetup(args, &out, &errOut); rc != exitUsage || errOut.Len() == 0 {
			t.Errorf("setup %q: exit %d, stderr %q", args, rc, errOut.String())
		}
	}
}

func TestSetupDryRunPrintsOnlyTheCommandsAndChangesNothing(t *testing.T) {
	c := cephadmintest.Client(t)
	pool, user := cephadmintest.Name("setup"), cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, pool, user)
	var out, errOut bytes.Buffer
	if rc := runSetup([]string{"--pool", pool, "--user", user, "--quota", "1Gi", "--dry-run"}, &out, &errOut); rc != exitOK {
		t.Fatalf("exit %d: %s", rc, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"ceph osd pool create " + pool, "rbd pool init " + pool, "ceph osd pool set-quota " + pool + " max_bytes 1073741824"}
	if len(lines) != 4 || strings.Join(lines[:3], "\n") != strings.Join(want, "\n") || !strings.HasPrefix(lines[3], "ceph auth get-or-create client."+user+" ") {
		t.Errorf("stdout:\n%s", out.String())
	}
	if exists, err := c.PoolExists(context.Background(), pool); err != nil || exists {
		t.Errorf("--dry-run made the pool: %v %v", exists, err)
	}
}
