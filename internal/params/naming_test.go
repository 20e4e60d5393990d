package params

import (
	"strings"
	"testing"
)

func TestImageNameIsDeterministic(t *testing.T) {
	a := ImageName("csi-vol-", "inst-1", "pvc-0a1b")
	if b := ImageName("csi-vol-", "inst-1", "pvc-0a1b"); a != b {
		t.Fatalf("ImageName differs between calls: %q, %q", a, b)
	}
	if !strings.HasPrefix(a, "csi-vol-") || len(a) != len("csi-vol-")+hashLen {
		t.Errorf("ImageName = %q: want the prefix and %d hex digits", a, hashLen)
	}
}

func TestImageNameDiffersByInstanceAndByName(t *testing.T) {
	names := map[string]string{}
	for _, in := range [][2]string{
		{"inst-1", "pvc-a"}, {"inst-2", "pvc-a"}, {"inst-1", "pvc-b"}, {"", "pvc-a"},
		{"inst-1pvc-a", ""}, {"inst-", "1pvc-a"}, // no collision when the boundary moves
	} {
		n := ImageName("csi-vol-", in[0], in[1])
		if prev, dup := names[n]; dup {
			t.Errorf("instance/name %q and %s share the image name %s", in, prev, n)
		}
		names[n] = strings.Join(in[:], "|")
	}
}

func TestLooksGeneratedRecognisesGeneratedNamesOnly(t *testing.T) {
	for _, prefix := range []string{DefaultNamePrefix, "", "k8s-", "_x", "Prod.1-", strings.Repeat("p", maxNamePrefix)} {
		if err := validatePrefix(prefix); err != nil {
			t.Fatalf("test prefix %q is not a valid volumeNamePrefix: %v", prefix, err)
		}
		if n := ImageName(prefix, "inst", "pvc-1"); !LooksGenerated(n) {
			t.Errorf("LooksGenerated(%q) = false for a name made with prefix %q", n, prefix)
		}
	}
	hash := ImageName("", "inst", "pvc-1")
	for _, n := range []string{
		"ceph-image", "csi-vol-", "csi-vol-" + hash[1:], "csi-vol-" + strings.ToUpper(hash), "csi-vol-" + hash + "x",
		"csi-vol-" + hash + "@snap", "-x" + hash, ".x" + hash, strings.Repeat("p", maxNamePrefix+1) + hash, "a/" + hash, "",
	} {
		if LooksGenerated(n) {
			t.Errorf("LooksGenerated(%q) = true for a name ImageName cannot produce", n)
		}
	}
}

func TestOwnedByTellsInstallationsApart(t *testing.T) {
	tests := []struct {
		name, image, instance string
		want                  bool
	}{
		{"own image, default prefix", ImageName("csi-vol-", "prod", "pvc-1"), "prod", true},
		{"own image, custom prefix", ImageName("team-a-", "prod", "pvc-1"), "prod", true},
		{"own image, no prefix", ImageName("", "prod", "pvc-1"), "prod", true},
		{"other installation", ImageName("csi-vol-", "staging", "pvc-1"), "prod", false},
		{"hand-made image", "ceph-image", "prod", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := OwnedBy(tc.image, tc.instance); got != tc.want {
				t.Fatalf("OwnedBy(%q, %q) = %v, want %v", tc.image, tc.instance, got, tc.want)
			}
		})
	}
}
