package mapper

import (
	"slices"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestParseKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KernelVersion
		bad  bool
	}{
		{in: "5.10.0-28-amd64", want: KernelVersion{5, 10}},
		{in: "3.10.0-1160.el7.x86_64", want: KernelVersion{3, 10}},
		{in: "6.1", want: KernelVersion{6, 1}},
		{in: "v4.19", want: KernelVersion{4, 19}},
		{in: "linux", bad: true},
		{in: "", bad: true},
	} {
		got, err := ParseKernelVersion(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseKernelVersion(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestKernelUnsupportedFeaturesNamesWhatTheKernelLacks(t *testing.T) {
	all := ceph.UserFeatures
	for _, tc := range []struct {
		kernel KernelVersion
		want   []string
	}{
		{KernelVersion{3, 10}, []string{"exclusive-lock", "object-map", "fast-diff", "deep-flatten", "journaling"}},
		{KernelVersion{4, 9}, []string{"object-map", "fast-diff", "deep-flatten", "journaling"}},
		{KernelVersion{5, 1}, []string{"object-map", "fast-diff", "journaling"}},
		{KernelVersion{6, 1}, []string{"journaling"}},
	} {
		got, unknown := KernelUnsupportedFeatures(tc.kernel, all)
		if !slices.Equal(got.Names(), tc.want) || unknown != 0 {
			t.Errorf("kernel %s: missing %v unknown %v; want %v", tc.kernel, got, unknown, tc.want)
		}
	}
}

func TestTunablesTableOrdersProfilesByKernel(t *testing.T) {
	if v, ok := TunablesSince("jewel"); !ok || v != (KernelVersion{4, 5}) {
		t.Errorf("jewel: %v %v", v, ok)
	}
	if _, ok := TunablesSince("optimal"); ok {
		t.Error("optimal is an alias Ceph resolves; the table must not guess it")
	}
	for _, tc := range []struct {
		kernel KernelVersion
		want   string
	}{
		{KernelVersion{3, 10}, "bobtail"}, {KernelVersion{4, 4}, "hammer"}, {KernelVersion{5, 10}, "jewel"}, {KernelVersion{2, 4}, ""},
	} {
		if got := NewestTunablesFor(tc.kernel); got != tc.want {
			t.Errorf("NewestTunablesFor(%s) = %q, want %q", tc.kernel, got, tc.want)
		}
	}
}

func TestFeatureDisableCommandOnlyForDisablableFeatures(t *testing.T) {
	cmd, ok := FeatureDisableCommand("kube/img", ceph.FeatureExclusiveLock|ceph.FeatureJournaling)
	if !ok || cmd != "rbd feature disable kube/img journaling exclusive-lock" {
		t.Errorf("got %q %v", cmd, ok)
	}
	if _, ok := FeatureDisableCommand("kube/img", ceph.FeatureDataPool); ok {
		t.Error("data-pool cannot be disabled on an existing image")
	}
}
