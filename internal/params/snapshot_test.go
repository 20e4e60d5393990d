package params

import (
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestParseSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		in      map[string]string
		want    Snapshot
		wantErr string
	}{
		{"empty is the source's cluster and pool", nil, Snapshot{}, ""},
		{"cluster and pool", map[string]string{"clusterID": "prod", "pool": "snaps"}, Snapshot{ClusterID: "prod", Pool: "snaps"}, ""},
		{"snapshotter metadata is recorded", map[string]string{KeySnapshotName: "daily", KeySnapshotNamespace: "shop", KeySnapshotContentName: "snapcontent-1"},
			Snapshot{Claim: SnapshotClaim{Name: "daily", Namespace: "shop", ContentName: "snapcontent-1"}}, ""},
		{"secret references are accepted", map[string]string{"csi.storage.k8s.io/snapshotter-secret-name": "s"}, Snapshot{}, ""},
		{"unknown key is named", map[string]string{"snapshotNamePrefix": "x"}, Snapshot{}, `"snapshotNamePrefix"`},
		{"bad pool", map[string]string{"pool": "-x"}, Snapshot{}, "pool"},
		{"bad cluster", map[string]string{"clusterID": "a/b"}, Snapshot{}, "clusterID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSnapshot(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestSnapshotNamesAreDistinctFromVolumeNames(t *testing.T) {
	snap := SnapshotImageName("prod", "same")
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"snapshot image is recognised", IsSnapshotImage(snap), true},
		{"snapshot image is owned by its instance", OwnedBy(snap, "prod"), true},
		{"not by another instance", OwnedBy(snap, "other"), false},
		{"volume of the same name is no snapshot image", IsSnapshotImage(ImageName(DefaultNamePrefix, "prod", "same")), false},
		{"same name, different hash", snap[len(SnapshotImagePrefix):] == ImageName(SnapshotImagePrefix, "prod", "same")[len(SnapshotImagePrefix):], false},
		{"a volume prefix cannot claim the snapshot prefix", validatePrefix("csi-snap-x") == nil, false},
		{"temporary snapshot names differ per target", TempSnapName("a") == TempSnapName("b"), false},
		{"a temporary snapshot name is recognised", IsTempSnapName(TempSnapName("a")), true},
		{"an operator's snapshot is not temporary", IsTempSnapName("csi-tmp-backup"), false},
		{"the snapshot restores read is not temporary", IsTempSnapName("csi-snap"), false},
		{"a longer hash is not ours", IsTempSnapName(TempSnapName("a") + "0"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

// FuzzParseSnapshot: no input panics, and what is accepted is valid.
func FuzzParseSnapshot(f *testing.F) {
	for _, s := range []string{"", "clusterID=c1\npool=kube", "pool=-x", "csi.storage.k8s.io/volumesnapshot/name=a\nx=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSnapshot(kvLines(s))
		if err != nil {
			return
		}
		if got.Pool != "" && ceph.ValidatePoolName(got.Pool) != nil {
			t.Fatalf("accepted pool %q", got.Pool)
		}
	})
}
