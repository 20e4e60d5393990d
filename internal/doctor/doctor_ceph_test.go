package doctor

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin/cephadmintest"
)

// findings returns the findings of check.
func findings(r Report, check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func severityOf(t *testing.T, r Report, check string) Severity {
	t.Helper()
	fs := findings(r, check)
	if len(fs) == 0 {
		t.Fatalf("no %s finding in %+v", check, r.Findings)
	}
	worst := OK
	for _, f := range fs {
		if f.Severity == Fail || (f.Severity == Warn && worst == OK) {
			worst = f.Severity
		}
	}
	return worst
}

// everyProblemNamesAFix: a finding that is not OK must say what to do.
func everyProblemNamesAFix(t *testing.T, r Report) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Severity != OK && len(f.Fix) == 0 {
			t.Errorf("%s %s: no fix", f.Check, f.Subject)
		}
	}
}

// setTunables sets the CRUSH tunables profile; the test restores the
// profile it found.
func setTunables(t *testing.T, c *cephadmin.Client, profile string) {
	t.Helper()
	ctx := context.Background()
	before, err := c.CrushTunables(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		restore := before.Profile
		if restore == "jewel" {
			restore = "optimal" // what a Pacific cluster starts with
		}
		if err := c.Mon(ctx, map[string]any{"prefix": "osd crush tunables", "profile": restore}, nil); err != nil {
			t.Errorf("restore tunables %s: %v", restore, err)
		}
	})
	if err := c.Mon(ctx, map[string]any{"prefix": "osd crush tunables", "profile": profile}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDoctorFlagsTunablesNewerThanAKernelAndClearsWhenEitherChanges(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	setTunables(t, c, "optimal")

	r := Run(ctx, c, Input{Nodes: KernelList("3.10")})
	if severityOf(t, r, "crush-tunables") != Fail {
		t.Fatalf("optimal tunables vs kernel 3.10 not flagged: %+v", findings(r, "crush-tunables"))
	}
	f := findings(r, "crush-tunables")[0]
	if !strings.Contains(f.Message, "jewel") || !strings.Contains(f.Message, "4.5") {
		t.Errorf("message should name the profile and the kernel it needs: %s", f.Message)
	}
	fixes := strings.Join(f.Fix, "\n")
	for _, want := range []string{"ceph osd crush tunables bobtail", "rebalance", "upgrade the kernel", "mounter: rbd-nbd"} {
		if !strings.Contains(fixes, want) {
			t.Errorf("fix lacks %q: %s", want, fixes)
		}
	}
	everyProblemNamesAFix(t, r)

	// The kernel list changes: nothing to flag about tunables.
	r = Run(ctx, c, Input{Nodes: KernelList("5.10.0-28-amd64")})
	if got := severityOf(t, r, "crush-tunables"); got != OK {
		t.Errorf("kernel 5.10: tunables %s", got)
	}
	if r.Failed != 0 {
		t.Errorf("kernel 5.10 on a healthy cluster: %+v", r.Findings)
	}

	// The profile changes to one kernel 3.10 understands.
	setTunables(t, c, "bobtail")
	r = Run(ctx, c, Input{Nodes: KernelList("3.10")})
	if got := severityOf(t, r, "crush-tunables"); got != OK {
		t.Errorf("bobtail vs kernel 3.10: tunables %s: %+v", got, findings(r, "crush-tunables"))
	}
}

func TestDoctorFlagsImageFeaturesKrbdCannotMap(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	pool := cephadmintest.Name("doctor")
	cephadmintest.RemovePoolAndUser(t, c, pool, "")
	if err := c.Mon(ctx, map[string]any{"prefix": "osd pool create", "pool": pool}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.InitPool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	feats := ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureJournaling
	ref := ceph.ImageRef{Cluster: c.Access.Cluster, Pool: pool, Name: "journaled"}
	if err := c.B.(ceph.Backend).CreateImage(ctx, c.Access.Admin, ref, ceph.ImageSpec{Size: 1 << 20, Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock}); err != nil {
		t.Fatal(err)
	}
	classes := []StorageClass{
		{Name: "journaled", Parameters: map[string]string{"clusterID": "x", "pool": pool, "imageFeatures": feats.String()}},
		{Name: "journaled-nbd", Parameters: map[string]string{"clusterID": "x", "pool": pool, "imageFeatures": feats.String(), "mounter": "rbd-nbd"}},
		{Name: "plain", Parameters: map[string]string{"clusterID": "x", "pool": pool, "imageFeatures": "layering"}},
	}
	r := Run(ctx, c, Input{Pool: pool, Nodes: KernelList("4.4,5.10"), StorageClasses: classes})
	everyProblemNamesAFix(t, r)

	bad := map[string]Finding{}
	for _, f := range findings(r, "storageclass-features") {
		if f.Severity == Fail {
			bad[f.Subject] = f
		}
	}
	f, ok := bad["journaled"]
	if !ok || len(bad) != 1 {
		t.Fatalf("want only StorageClass journaled flagged, got %+v", findings(r, "storageclass-features"))
	}
	if !strings.Contains(f.Message, "journaling") || !strings.Contains(f.Message, "exclusive-lock") || !strings.Contains(f.Fix[0], "imageFeatures: layering") {
		t.Errorf("finding should name the features and imageFeatures: layering: %+v", f)
	}
	if !strings.Contains(f.Message, "kernel 4.4") || !strings.Contains(f.Message, "kernel 5.10") {
		t.Errorf("journaling maps on no kernel: both nodes should be named: %s", f.Message)
	}

	imgs := findings(r, "image-features")
	if len(imgs) != 1 || imgs[0].Severity != Fail || imgs[0].Subject != pool+"/journaled" {
		t.Fatalf("image with exclusive-lock vs kernel 4.4: %+v", imgs)
	}
	if want := "rbd feature disable " + pool + "/journaled exclusive-lock"; !slices.Contains(imgs[0].Fix, want) {
		t.Errorf("fix should be %q: %q", want, imgs[0].Fix)
	}
}

func TestDoctorFlagsAMissingPoolAUserWithoutCapsAndUnreachableMonitors(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	user := cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, "", user)
	if err := c.Mon(ctx, map[string]any{"prefix": "auth get-or-create", "entity": "client." + user, "caps": []string{"mon", "allow r", "osd", "allow r pool=kube"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := Run(ctx, c, Input{Pool: "no-such-pool", User: user})
	if severityOf(t, r, "pool") != Fail {
		t.Errorf("missing pool not flagged: %+v", r.Findings)
	}
	r = Run(ctx, c, Input{Pool: "kube", User: user})
	if severityOf(t, r, "user-caps") != Fail {
		t.Errorf("read-only user not flagged: %+v", findings(r, "user-caps"))
	}
	if fix := findings(r, "user-caps")[0].Fix[0]; !strings.Contains(fix, "ceph auth caps client."+user+" ") {
		t.Errorf("fix: %s", fix)
	}
	everyProblemNamesAFix(t, r)

	// A cluster nobody answers for: one finding, and nothing else is asked.
	down := *c
	down.Access.Cluster = ceph.Cluster{Monitors: []string{"127.0.0.1:1"}}
	down.Timeout = 3 * time.Second
	r = Run(ctx, &down, Input{Pool: "kube"})
	if len(r.Findings) != 1 || r.Findings[0].Check != "monitors" || r.Findings[0].Severity != Fail {
		t.Errorf("unreachable monitors: %+v", r.Findings)
	}
	everyProblemNamesAFix(t, r)
}
