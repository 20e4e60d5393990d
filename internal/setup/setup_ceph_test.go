package setup

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin/cephadmintest"
)

func commands(r Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Command)
	}
	return out
}

func TestSetupOnAFreshClusterThenAgainChangesNothingTheSecondTime(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	pool, user := cephadmintest.Name("setup"), cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, pool, user)
	o := Options{Pool: pool, User: user, Quota: 1 << 30, QuotaSet: true}

	first, err := Apply(ctx, c, o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ceph osd pool create " + pool,
		"rbd pool init " + pool,
		"ceph osd pool set-quota " + pool + " max_bytes 1073741824",
		"ceph auth get-or-create client." + user + " mgr 'profile rbd pool=" + pool + "' mon 'profile rbd' osd 'profile rbd pool=" + pool + "'",
	}
	if got := commands(first); !slices.Equal(got, want) {
		t.Fatalf("first run:\n got %q\nwant %q", got, want)
	}
	for _, s := range first.Steps {
		if !s.Ran {
			t.Errorf("%s: not run", s.Command)
		}
	}
	// The cluster is as asked.
	apps, err := c.Applications(ctx, pool)
	if err != nil || !slices.Contains(apps, "rbd") {
		t.Errorf("applications of %s: %v %v", pool, apps, err)
	}
	if q, err := c.Quota(ctx, pool); err != nil || q != 1<<30 {
		t.Errorf("quota: %d %v", q, err)
	}
	caps, found, err := c.UserCaps(ctx, user)
	if err != nil || !found || !caps.Equal(cephadmin.RecommendedCaps(pool)) {
		t.Errorf("caps of %s: %v found=%v %v", user, caps, found, err)
	}

	second, err := Apply(ctx, c, o)
	if err != nil {
		t.Fatal(err)
	}
	if second.Changed() || len(second.CapsDiff) != 0 {
		t.Errorf("second run changed %q (caps diff %q)", commands(second), second.CapsDiff)
	}
	if len(second.Notes) != 3 {
		t.Errorf("second run should say pool, quota and user are as asked: %q", second.Notes)
	}

	// A new quota is the only change.
	o.Quota = 2 << 30
	third, err := Apply(ctx, c, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := commands(third); !slices.Equal(got, []string{"ceph osd pool set-quota " + pool + " max_bytes 2147483648"}) {
		t.Errorf("quota change: %q", got)
	}
}

func TestSetupLeavesAUserWithOtherCapsAloneUnlessAskedAndShowsTheDiff(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	pool, user := cephadmintest.Name("setup"), cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, pool, user)
	seed := cephadmin.Caps{"mon": "allow r", "osd": "allow class-read object_prefix rbd_children, allow rwx pool=" + pool}
	if err := c.Mon(ctx, map[string]any{"prefix": "auth get-or-create", "entity": "client." + user, "caps": seed.Args()}, nil); err != nil {
		t.Fatal(err)
	}

	r, err := Apply(ctx, c, Options{Pool: pool, User: user})
	if err != nil {
		t.Fatal(err)
	}
	if got := commands(r); !slices.Equal(got, []string{"ceph osd pool create " + pool, "rbd pool init " + pool}) {
		t.Errorf("only the pool should be made: %q", got)
	}
	wantDiff := []string{
		"+mgr 'profile rbd pool=" + pool + "'",
		"-mon 'allow r'", "+mon 'profile rbd'",
		"-osd 'allow class-read object_prefix rbd_children, allow rwx pool=" + pool + "'", "+osd 'profile rbd pool=" + pool + "'",
	}
	if !slices.Equal(r.CapsDiff, wantDiff) {
		t.Errorf("diff:\n got %q\nwant %q", r.CapsDiff, wantDiff)
	}
	if !slices.ContainsFunc(r.Notes, func(n string) bool {
		return strings.Contains(n, "left alone") && strings.Contains(n, "let it create and map")
	}) {
		t.Errorf("notes should say the seed-era caps suffice and were left alone: %q", r.Notes)
	}
	if caps, _, err := c.UserCaps(ctx, user); err != nil || !caps.Equal(seed) {
		t.Errorf("caps changed without --update-caps: %v %v", caps, err)
	}

	r, err = Apply(ctx, c, Options{Pool: pool, User: user, UpdateCaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := commands(r); len(got) != 1 || !strings.HasPrefix(got[0], "ceph auth caps client."+user+" ") {
		t.Errorf("--update-caps: %q", got)
	}
	if caps, _, err := c.UserCaps(ctx, user); err != nil || !caps.Equal(cephadmin.RecommendedCaps(pool)) {
		t.Errorf("caps after --update-caps: %v %v", caps, err)
	}
}

func TestSetupDryRunChangesNothingAndPrintsTheCommands(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	pool, user := cephadmintest.Name("setup"), cephadmintest.Name("user")
	cephadmintest.RemovePoolAndUser(t, c, pool, user)

	r, err := Apply(ctx, c, Options{Pool: pool, User: user, Quota: 1 << 20, QuotaSet: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 4 {
		t.Errorf("dry run should list pool create, init, quota and user: %q", commands(r))
	}
	for _, s := range r.Steps {
		if s.Ran {
			t.Errorf("dry run ran %s", s.Command)
		}
	}
	if exists, err := c.PoolExists(ctx, pool); err != nil || exists {
		t.Errorf("dry run made pool %s: %v %v", pool, exists, err)
	}
	if _, found, err := c.UserCaps(ctx, user); err != nil || found {
		t.Errorf("dry run made user %s: %v %v", user, found, err)
	}
}

func TestSetupRefusesAPoolOfAnotherApplication(t *testing.T) {
	c := cephadmintest.Client(t)
	ctx := context.Background()
	pool := cephadmintest.Name("setup")
	cephadmintest.RemovePoolAndUser(t, c, pool, "")
	for _, cmd := range []map[string]any{
		{"prefix": "osd pool create", "pool": pool},
		{"prefix": "osd pool application enable", "pool": pool, "app": "rgw"},
	} {
		if err := c.Mon(ctx, cmd, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Apply(ctx, c, Options{Pool: pool, User: "kube"})
	if err == nil || !strings.Contains(err.Error(), "rgw") {
		t.Fatalf("want a refusal naming rgw, got %v", err)
	}
	if apps, _ := c.Applications(ctx, pool); slices.Contains(apps, "rbd") {
		t.Error("rbd was added to another application's pool")
	}
}
