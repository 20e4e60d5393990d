package cephadmin

import (
	"slices"
	"testing"
)

func TestJudgeUnderstandsBothDriverCapForms(t *testing.T) {
	for _, tc := range []struct {
		name       string
		caps       Caps
		createMap  bool
		mgrTasks   bool
		missingLen int
	}{
		{"profile rbd form", RecommendedCaps("kube"), true, true, 0},
		{"seed-era form", Caps{"mon": "allow r", "osd": "allow class-read object_prefix rbd_children, allow rwx pool=kube"}, true, false, 0},
		{"admin allow star", Caps{"mon": "allow *", "osd": "allow *", "mgr": "allow *"}, true, true, 0},
		{"profile rbd on all pools", Caps{"mon": "profile rbd", "osd": "profile rbd"}, true, false, 0},
		{"another pool only", Caps{"mon": "profile rbd", "osd": "profile rbd pool=other"}, false, false, 1},
		{"read-only osd", Caps{"mon": "allow r", "osd": "allow r pool=kube"}, false, false, 1},
		{"object prefix only", Caps{"mon": "allow r", "osd": "allow rwx pool=kube object_prefix rbd_data"}, false, false, 1},
		{"no mon access", Caps{"osd": "profile rbd pool=kube"}, false, false, 1},
		{"nothing", Caps{}, false, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.caps.Judge("kube")
			if v.CreateAndMap != tc.createMap || v.MgrTasks != tc.mgrTasks || len(v.Missing) != tc.missingLen {
				t.Errorf("Judge = %+v; want createAndMap %v, mgrTasks %v, %d missing", v, tc.createMap, tc.mgrTasks, tc.missingLen)
			}
		})
	}
}

func TestDiffShowsOnlyServicesThatDiffer(t *testing.T) {
	have := Caps{"mon": "profile  rbd", "osd": "allow rwx pool=kube"}
	got := have.Diff(RecommendedCaps("kube"))
	want := []string{"+mgr 'profile rbd pool=kube'", "-osd 'allow rwx pool=kube'", "+osd 'profile rbd pool=kube'"}
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %q, want %q", got, want)
	}
	if !RecommendedCaps("kube").Equal(Caps{"mon": "profile rbd", "osd": "profile rbd pool=kube", "mgr": "profile rbd  pool=kube"}) {
		t.Error("whitespace must not count as a difference")
	}
}
