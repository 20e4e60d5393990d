package ceph

import (
	"slices"
	"strings"
	"testing"
)

func TestFeaturesNamesAndStringFollowBitOrder(t *testing.T) {
	tests := []struct {
		name string
		f    Features
		want []string
	}{
		{"none", 0, nil},
		{"layering", FeatureLayering, []string{"layering"}},
		{"bit order whatever the expression order", FeatureFastDiff | FeatureLayering | FeatureObjectMap | FeatureExclusiveLock,
			[]string{"layering", "exclusive-lock", "object-map", "fast-diff"}},
		{"librbd-set features are named too", FeatureDataPool | FeatureOperations | FeatureStripingV2,
			[]string{"striping", "data-pool", "operations"}},
		{"unknown bits are left out", FeatureJournaling | 1<<40, []string{"journaling"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Names(); !slices.Equal(got, tc.want) {
				t.Errorf("Names() = %q, want %q", got, tc.want)
			}
			if got, want := tc.f.String(), strings.Join(tc.want, ","); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
}

func TestParseFeaturesAcceptsUserFeaturesIgnoringWhitespaceAndEmptyItems(t *testing.T) {
	tests := []struct {
		in   string
		want Features
	}{
		{"", 0},
		{" , ,", 0},
		{"layering", FeatureLayering},
		{" layering\t", FeatureLayering},
		{"layering , exclusive-lock\n", FeatureLayering | FeatureExclusiveLock},
		{",,layering,,", FeatureLayering},
		{"layering,layering", FeatureLayering},
		{"deep-flatten", FeatureDeepFlatten},
		{"exclusive-lock,object-map,fast-diff", FeatureExclusiveLock | FeatureObjectMap | FeatureFastDiff},
		{"fast-diff,object-map,exclusive-lock", FeatureExclusiveLock | FeatureObjectMap | FeatureFastDiff},
		{"journaling,exclusive-lock", FeatureJournaling | FeatureExclusiveLock},
		{UserFeatures.String(), UserFeatures},
	}
	for _, tc := range tests {
		got, err := ParseFeatures(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseFeatures(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseFeaturesRejectsUnknownOrLibrbdOwnedFeaturesNamingThem(t *testing.T) {
	for _, tc := range []struct{ in, name string }{
		{"bogus", "bogus"},
		{"Layering", "Layering"},
		{"layering,striping", "striping"},
		{"data-pool", "data-pool"},
		{"operations", "operations"},
		{"migrating", "migrating"},
		{"non-primary", "non-primary"},
		{"layering;exclusive-lock", "layering;exclusive-lock"},
		{"layering exclusive-lock", "layering exclusive-lock"},
	} {
		_, err := ParseFeatures(tc.in)
		if err == nil {
			t.Errorf("ParseFeatures(%q) accepted", tc.in)
			continue
		}
		for _, want := range []string{`"` + tc.name + `"`, UserFeatures.String()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseFeatures(%q) error %q does not mention %s", tc.in, err, want)
			}
		}
	}
}

func TestParseFeaturesDependencyErrorNamesEverythingToAdd(t *testing.T) {
	tests := []struct {
		in, feature, add string
	}{
		{"object-map", "object-map", "exclusive-lock"},
		{"layering,object-map", "object-map", "exclusive-lock"},
		{"journaling", "journaling", "exclusive-lock"},
		{"fast-diff", "fast-diff", "exclusive-lock,object-map"},
		{"exclusive-lock,fast-diff", "fast-diff", "object-map"},
		{"object-map,fast-diff", "object-map", "exclusive-lock"},
	}
	for _, tc := range tests {
		_, err := ParseFeatures(tc.in)
		if err == nil {
			t.Errorf("ParseFeatures(%q) accepted a feature without its dependencies", tc.in)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "feature "+tc.feature+" requires") || !strings.Contains(msg, "add "+tc.add+" to imageFeatures") {
			t.Errorf("ParseFeatures(%q) error %q: want it to say %s needs %s added", tc.in, msg, tc.feature, tc.add)
		}
		// Following the advice must be enough.
		if _, err := ParseFeatures(tc.in + "," + tc.add); err != nil {
			t.Errorf("ParseFeatures(%q) after adding %s: %v", tc.in, tc.add, err)
		}
	}
}

func TestPoolUsageAvailableIsCappedByWhatTheQuotaLeaves(t *testing.T) {
	tests := []struct {
		name string
		u    PoolUsage
		want uint64
	}{
		{"no quota: free space", PoolUsage{UsedBytes: 900, MaxAvail: 100}, 100},
		{"no quota, full pool", PoolUsage{UsedBytes: 900, MaxAvail: 0}, 0},
		{"quota leaves more than the cluster has", PoolUsage{UsedBytes: 100, MaxAvail: 50, QuotaBytes: 1000}, 50},
		{"quota leaves less than the cluster has", PoolUsage{UsedBytes: 900, MaxAvail: 5000, QuotaBytes: 1000}, 100},
		{"quota used up exactly", PoolUsage{UsedBytes: 1000, MaxAvail: 5000, QuotaBytes: 1000}, 0},
		{"used above quota does not wrap around", PoolUsage{UsedBytes: 1500, MaxAvail: 5000, QuotaBytes: 1000}, 0},
		{"empty pool with quota", PoolUsage{MaxAvail: 5000, QuotaBytes: 1000}, 1000},
	}
	for _, tc := range tests {
		if got := tc.u.Available(); got != tc.want {
			t.Errorf("%s: %+v.Available() = %d, want %d", tc.name, tc.u, got, tc.want)
		}
	}
}

func FuzzParseFeatures(f *testing.F) {
	for _, s := range []string{"", "layering", " layering , exclusive-lock ", "fast-diff", "object-map,exclusive-lock",
		"journaling", "bogus", ",,,", "layering\x00", UserFeatures.String(), "data-pool,operations"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFeatures(s)
		if err != nil {
			if got != 0 || err.Error() == "" {
				t.Fatalf("ParseFeatures(%q) = %v, %q", s, got, err)
			}
			return
		}
		if got&^UserFeatures != 0 {
			t.Fatalf("ParseFeatures(%q) = %v: holds features a user may not request", s, got)
		}
		for bit, need := range featureRequires {
			if got&bit != 0 && got&need == 0 {
				t.Fatalf("ParseFeatures(%q) = %v: %v without %v", s, got, bit, need)
			}
		}
		again, err := ParseFeatures(got.String())
		if err != nil || again != got {
			t.Fatalf("ParseFeatures(%q) = %v, but its String %q parses as %v, %v", s, got, got.String(), again, err)
		}
	})
}
