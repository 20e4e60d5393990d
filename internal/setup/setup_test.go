package setup

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin/cephadminfake"
)

func TestApplyIsIdempotentOnTheFake(t *testing.T) {
	f := cephadminfake.New()
	c := f.Client()
	o := Options{Pool: "kube", User: "kube", Quota: 1 << 30, QuotaSet: true}
	r, err := Apply(context.Background(), c, o)
	if err != nil || len(r.Steps) != 4 {
		t.Fatalf("first run: %+v %v", r, err)
	}
	if !f.Users["client.kube"].Equal(cephadmin.RecommendedCaps("kube")) || f.Pools["kube"].Quota != 1<<30 || !slices.Contains(f.Pools["kube"].Apps, "rbd") {
		t.Fatalf("state after the first run: %+v %+v", f.Users, f.Pools["kube"])
	}
	before := len(f.Commands)
	r, err = Apply(context.Background(), c, o)
	if err != nil || r.Changed() || len(f.Commands) != before {
		t.Errorf("second run changed %q (%v)", f.Commands[before:], err)
	}
}

func TestApplyDryRunSendsNoChange(t *testing.T) {
	f := cephadminfake.New()
	f.Users["client.kube"] = cephadmin.Caps{"mon": "allow r"}
	r, err := Apply(context.Background(), f.Client(), Options{Pool: "kube", User: "kube", UpdateCaps: true, QuotaSet: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ceph osd pool create kube", "rbd pool init kube", "ceph osd pool set-quota kube max_bytes 0", "ceph auth caps client.kube mgr 'profile rbd pool=kube' mon 'profile rbd' osd 'profile rbd pool=kube'"}
	if got := commands(r); !slices.Equal(got, want) {
		t.Errorf("dry run:\n got %q\nwant %q", got, want)
	}
	if len(f.Commands) != 0 || len(f.Pools) != 0 {
		t.Errorf("dry run changed the cluster: %q", f.Commands)
	}
}

func TestApplyReportsCapsThatCannotCreateImagesAndLeavesThemAlone(t *testing.T) {
	f := cephadminfake.New()
	f.Pools["kube"] = &cephadminfake.Pool{Apps: []string{"rbd"}}
	f.Users["client.kube"] = cephadmin.Caps{"mon": "allow r", "osd": "allow r pool=kube"}
	r, err := Apply(context.Background(), f.Client(), Options{Pool: "kube", User: "kube"})
	if err != nil || r.Changed() {
		t.Fatalf("%+v %v", r, err)
	}
	if len(r.CapsDiff) == 0 || !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "do NOT let it create") }) {
		t.Errorf("want a diff and a warning that the caps fall short: %+v", r)
	}
}

func TestOptionsRefuseNamesBeforeAskingTheCluster(t *testing.T) {
	for _, o := range []Options{
		{Pool: "", User: "kube"}, {Pool: "-x", User: "kube"}, {Pool: "kube", User: "client.kube"}, {Pool: "kube", User: "admin"},
	} {
		f := cephadminfake.New()
		if _, err := Apply(context.Background(), f.Client(), o); err == nil {
			t.Errorf("%+v accepted", o)
		}
		if len(f.Commands) != 0 {
			t.Errorf("%+v: commands sent: %q", o, f.Commands)
		}
	}
}
