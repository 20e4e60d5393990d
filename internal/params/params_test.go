package params

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// sc is a minimal valid StorageClass with kv (key, value, ...) added.
func sc(kv ...string) map[string]string {
	m := map[string]string{KeyClusterID: "c1"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// rejects checks that ParseVolume refuses in with a message holding every want.
func rejects(t *testing.T, in map[string]string, want ...string) {
	t.Helper()
	v, err := ParseVolume(in)
	if err == nil {
		t.Errorf("ParseVolume(%q) = %+v, accepted", in, v)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("ParseVolume(%q) error %q does not contain %q", in, err, w)
		}
	}
}

func parse(t *testing.T, in map[string]string) Volume {
	t.Helper()
	v, err := ParseVolume(in)
	if err != nil {
		t.Fatalf("ParseVolume(%q): %v", in, err)
	}
	return v
}

func TestParseVolumeDefaults(t *testing.T) {
	v := parse(t, sc())
	want := Volume{ClusterID: "c1", Pool: "rbd", Features: ceph.FeatureLayering, Prefix: "csi-vol-", AdminID: "admin", UserID: "admin"}
	if !equalVolume(v, want) {
		t.Errorf("ParseVolume(clusterID only) = %+v, want %+v", v, want)
	}
}

func TestParseVolumeReadsACephCSIStorageClass(t *testing.T) {
	v := parse(t, map[string]string{
		"clusterID": "c1", "pool": "kube", "dataPool": "ec-data", "imageFeatures": "layering,exclusive-lock,object-map,fast-diff",
		"imageFormat": "2", "csi.storage.k8s.io/fstype": "xfs", "volumeNamePrefix": "k8s-", "mounter": "rbd-nbd",
		"mapOptions": "io-timeout=30",
		"csi.storage.k8s.io/provisioner-secret-name": "csi-rbd-secret", "csi.storage.k8s.io/provisioner-secret-namespace": "ceph",
		"csi.storage.k8s.io/node-stage-secret-name": "csi-rbd-secret", "csi.storage.k8s.io/node-stage-secret-namespace": "ceph",
		"csi.storage.k8s.io/controller-expand-secret-name": "csi-rbd-secret", "csi.storage.k8s.io/controller-expand-secret-namespace": "ceph",
	})
	want := Volume{
		ClusterID: "c1", Pool: "kube", DataPool: "ec-data",
		Features: ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureObjectMap | ceph.FeatureFastDiff,
		FsType:   "xfs", Prefix: "k8s-", Mounter: "rbd-nbd", MapOpts: "io-timeout=30", AdminID: "admin", UserID: "admin",
	}
	if !equalVolume(v, want) {
		t.Errorf("got %+v, want %+v", v, want)
	}
}

func TestParseVolumeReadsAnInTreeStorageClass(t *testing.T) {
	v := parse(t, map[string]string{
		"monitors": "10.16.153.105:6789, 10.16.153.106:6789", "adminId": "kube", "adminSecretName": "ceph-secret",
		"adminSecretNamespace": "kube-system", "pool": "kube", "userId": "kube-user", "userSecretName": "ceph-secret-user",
		"userSecretNamespace": "default", "fsType": "ext4", "imageFormat": "2", "imageFeatures": "layering",
	})
	want := Volume{
		Monitors: []string{"10.16.153.105:6789", "10.16.153.106:6789"}, Pool: "kube", Features: ceph.FeatureLayering,
		FsType: "ext4", Prefix: "csi-vol-", AdminID: "kube", UserID: "kube-user",
	}
	if !equalVolume(v, want) {
		t.Errorf("got %+v, want %+v", v, want)
	}
}

func TestParseVolumeRejectsEachUnknownKeyNamingIt(t *testing.T) {
	for _, key := range []string{
		"clusterId", "ClusterID", "imagefeatures", "thickProvision", "encryptionPassphrase", "unmapOptions", "mounterOptions",
		"csi.storage.k8s.io/pvc/uid", "csi.storage.k8s.io/provisioner-secret-key", "csi.storage.k8s.io/fstype ",
		"", "key with spaces", "new\nline", "pool\x00",
	} {
		rejects(t, sc(key, "x"), "unknown StorageClass parameter "+strconv.Quote(key), "remove it")
	}
}

func TestParseVolumeNamesEveryUnknownKey(t *testing.T) {
	rejects(t, sc("zeta", "1", "alpha", "2"), `"alpha"`, `"zeta"`, "remove them")
}

func TestParseVolumeAcceptsSidecarKeysAndRecordsTheClaim(t *testing.T) {
	in := sc("csi.storage.k8s.io/pvc/name", "data", "csi.storage.k8s.io/pvc/namespace", "shop", "csi.storage.k8s.io/pv/name", "pvc-123")
	for _, op := range []string{"provisioner", "controller-publish", "node-stage", "node-publish", "controller-expand", "node-expand", "snapshotter"} {
		in["csi.storage.k8s.io/"+op+"-secret-name"] = "s"
		in["csi.storage.k8s.io/"+op+"-secret-namespace"] = "ns"
	}
	v := parse(t, in)
	if want := (Claim{PVCName: "data", PVCNamespace: "shop", PVName: "pvc-123"}); v.Claim != want {
		t.Errorf("Claim = %+v, want %+v", v.Claim, want)
	}
	if v := parse(t, sc()); v.Claim != (Claim{}) {
		t.Errorf("Claim without sidecar keys = %+v, want empty", v.Claim)
	}
}

func TestParseVolumeNeedsExactlyOneOfClusterIDAndMonitors(t *testing.T) {
	rejects(t, sc("monitors", "10.0.0.1:6789"), "clusterID", "monitors", "both")
	rejects(t, map[string]string{"pool": "kube"}, "clusterID", "monitors", "required")
	rejects(t, sc("clusterID", ""), "clusterID", "empty")
	rejects(t, sc("clusterID", "a/b"), "clusterID", `"a/b"`)
	rejects(t, sc("clusterID", strings.Repeat("c", 37)), "clusterID")
}

func TestParseVolumeMonitors(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"10.0.0.1:6789", []string{"10.0.0.1:6789"}},
		{" 10.0.0.1:6789 , 10.0.0.2:6789 ,", []string{"10.0.0.1:6789", "10.0.0.2:6789"}},
		{"[::1]:6789,[2001:db8::2]", []string{"[::1]:6789", "[2001:db8::2]"}},
		{"mon-a.rook-ceph.svc:6789", []string{"mon-a.rook-ceph.svc:6789"}},
	}
	for _, tc := range tests {
		v := parse(t, map[string]string{"monitors": tc.in})
		if v.ClusterID != "" || !slices.Equal(v.Monitors, tc.want) {
			t.Errorf("monitors=%q: got %q / %q, want monitors %q", tc.in, v.ClusterID, v.Monitors, tc.want)
		}
	}
	for _, bad := range []string{"", ",", "10.0.0.1:99999", "10.0.0.1 10.0.0.2", "::1", "mon\v1", "-mon", "10.0.0.1;10.0.0.2"} {
		rejects(t, map[string]string{"monitors": bad}, "monitors")
	}
}

func TestParseVolumePools(t *testing.T) {
	if v := parse(t, sc()); v.Pool != "rbd" || v.DataPool != "" {
		t.Errorf("default pools = %q, %q; want rbd and none", v.Pool, v.DataPool)
	}
	if v := parse(t, sc("pool", "kube", "dataPool", "ec_data.1")); v.Pool != "kube" || v.DataPool != "ec_data.1" {
		t.Errorf("pools = %q, %q", v.Pool, v.DataPool)
	}
	if v := parse(t, sc("dataPool", "")); v.DataPool != "" {
		t.Errorf("empty dataPool = %q, want none", v.DataPool)
	}
	for _, bad := range []string{"", "-kube", "a/b", "a b", "kube\n", "ä", strings.Repeat("p", 65)} {
		rejects(t, sc("pool", bad), "parameter pool")
		if bad != "" {
			rejects(t, sc("dataPool", bad), "parameter dataPool")
		}
	}
}

func TestParseVolumeOnlyAcceptsImageFormat2(t *testing.T) {
	parse(t, sc("imageFormat", "2"))
	for _, bad := range []string{"1", "", "02", " 2", "2.0", "3"} {
		rejects(t, sc("imageFormat", bad), "imageFormat", strconv.Quote(bad), `only format "2"`, "deprecated")
	}
}

func TestParseVolumeImageFeatures(t *testing.T) {
	tests := []struct {
		in   string
		want ceph.Features
	}{
		{"", ceph.FeatureLayering},
		{" , ", ceph.FeatureLayering},
		{"deep-flatten", ceph.FeatureDeepFlatten},
		{" layering , exclusive-lock ", ceph.FeatureLayering | ceph.FeatureExclusiveLock},
		{"exclusive-lock,journaling", ceph.FeatureExclusiveLock | ceph.FeatureJournaling},
	}
	for _, tc := range tests {
		if v := parse(t, sc("imageFeatures", tc.in)); v.Features != tc.want {
			t.Errorf("imageFeatures=%q: got %v, want %v", tc.in, v.Features, tc.want)
		}
	}
	rejects(t, sc("imageFeatures", "layering,bogus"), "imageFeatures", `unknown image feature "bogus"`)
	rejects(t, sc("imageFeatures", "striping"), "imageFeatures", `"striping"`)
	rejects(t, sc("imageFeatures", "object-map"), "imageFeatures", "add exclusive-lock")
	rejects(t, sc("imageFeatures", "layering,fast-diff"), "imageFeatures", "add exclusive-lock,object-map")
	rejects(t, sc("imageFeatures", "journaling"), "imageFeatures", "add exclusive-lock")
}

func TestParseVolumeFsType(t *testing.T) {
	tests := []struct {
		csi, legacy, want string
	}{
		{"", "", ""},
		{"ext4", "", "ext4"},
		{"", "xfs", "xfs"},
		{"xfs", "xfs", "xfs"},
	}
	for _, tc := range tests {
		in := sc()
		if tc.csi != "" {
			in[KeyFsTypeCSI] = tc.csi
		}
		if tc.legacy != "" {
			in[KeyFsType] = tc.legacy
		}
		if v := parse(t, in); v.FsType != tc.want {
			t.Errorf("fstype %q / fsType %q: got %q, want %q", tc.csi, tc.legacy, v.FsType, tc.want)
		}
	}
	rejects(t, sc(KeyFsTypeCSI, "ext4", KeyFsType, "xfs"), KeyFsTypeCSI, "fsType", "disagree")
	rejects(t, sc(KeyFsTypeCSI, "btrfs"), KeyFsTypeCSI, `"btrfs"`, "ext4, xfs")
	rejects(t, sc(KeyFsType, "ext3"), "fsType", `"ext3"`, "ext4, xfs")
	rejects(t, sc(KeyFsTypeCSI, "EXT4"), `"EXT4"`)
}

func TestParseVolumeNamePrefix(t *testing.T) {
	for _, ok := range []string{"", "k8s-", "_x", "a.b", "Prod-1", strings.Repeat("p", 32)} {
		if v := parse(t, sc("volumeNamePrefix", ok)); v.Prefix != ok {
			t.Errorf("volumeNamePrefix=%q: got %q", ok, v.Prefix)
		}
	}
	for _, bad := range []string{"-x", ".x", "a/b", "a b", "a@b", "a\n", "ü", strings.Repeat("p", 33)} {
		rejects(t, sc("volumeNamePrefix", bad), "volumeNamePrefix", strconv.Quote(bad))
	}
}

func TestParseVolumeMounter(t *testing.T) {
	for _, m := range []string{"", "krbd", "rbd-nbd", "fuse"} {
		if v := parse(t, sc("mounter", m)); v.Mounter != m {
			t.Errorf("mounter=%q: got %q", m, v.Mounter)
		}
	}
	for _, bad := range []string{"nbd", "KRBD", "krbd ", "rbd"} {
		rejects(t, sc("mounter", bad), "mounter", strconv.Quote(bad), "krbd, rbd-nbd, fuse")
	}
}

func TestParseVolumeUserIDDefaultsToAdminID(t *testing.T) {
	tests := []struct {
		in               map[string]string
		wantAdmin, wantU string
	}{
		{sc(), "admin", "admin"},
		{sc("adminId", "kube"), "kube", "kube"},
		{sc("userId", "node"), "admin", "node"},
		{sc("adminId", "kube", "userId", "node"), "kube", "node"},
	}
	for _, tc := range tests {
		v := parse(t, tc.in)
		if v.AdminID != tc.wantAdmin || v.UserID != tc.wantU {
			t.Errorf("%q: adminId %q userId %q, want %q %q", tc.in, v.AdminID, v.UserID, tc.wantAdmin, tc.wantU)
		}
	}
	rejects(t, sc("adminId", "client.admin"), "adminId", `without the "client." prefix`)
	rejects(t, sc("userId", "client.kube"), "userId", `without the "client." prefix`)
	for _, bad := range []string{"", "a b", "-x", "a,b", "a=b", strings.Repeat("u", 65)} {
		rejects(t, sc("adminId", bad), "adminId")
		rejects(t, sc("userId", bad), "userId")
	}
}

func TestValidateMapOptionsAcceptsPlainOptions(t *testing.T) {
	for _, s := range []string{
		"", "noshare", "queue_depth=128", "ms_mode=prefer-crc,noshare", "lock_on_read,exclusive", "crush_location=host:a|rack:b",
		"io-timeout=30",
	} {
		if err := ValidateMapOptions(s); err != nil {
			t.Errorf("ValidateMapOptions(%q) = %v", s, err)
		}
		if v := parse(t, sc("mapOptions", s)); v.MapOpts != s {
			t.Errorf("mapOptions=%q: got %q", s, v.MapOpts)
		}
	}
}

// The controller refuses what the node's mapper would refuse at
// NodeStageVolume, naming the option.
func TestMapOptionsFollowTheNodesAllowlist(t *testing.T) {
	tests := []struct {
		name   string
		in     map[string]string
		reject []string // empty: accepted
	}{
		{"krbd option for krbd", sc("mounter", "krbd", "mapOptions", "queue_depth=128"), nil},
		{"rbd-nbd option for rbd-nbd", sc("mounter", "rbd-nbd", "mapOptions", "io-timeout=30"), nil},
		{"rbd-nbd option for krbd", sc("mounter", "krbd", "mapOptions", "io-timeout=30"), []string{"mapOptions", `"io-timeout"`, "krbd"}},
		{"krbd option for rbd-nbd", sc("mounter", "rbd-nbd", "mapOptions", "queue_depth=128"), []string{"mapOptions", `"queue_depth"`, "rbd-nbd"}},
		{"any option for fuse", sc("mounter", "fuse", "mapOptions", "noshare"), []string{"mapOptions", "fuse", "takes no map options"}},
		{"option no mapper knows", sc("mapOptions", "empty="), []string{"mapOptions", `"empty"`, "no mapper accepts"}},
		{"option the driver sets", sc("mapOptions", "secret=x"), []string{"mapOptions", `"secret"`}},
		{"bad value", sc("mounter", "krbd", "mapOptions", "queue_depth=lots"), []string{"mapOptions", `"queue_depth"`, "integer"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.reject) == 0 {
				parse(t, tc.in)
				return
			}
			rejects(t, tc.in, tc.reject...)
			if _, err := ParseVolume(tc.in); !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestValidateMapOptionsRefusesInjection(t *testing.T) {
	for _, s := range []string{
		"a b", " noshare", "noshare ", "a\nb", "a\tb", "a\rb", "a\x00", "a\vb",
		"queue_depth=1 name=admin", "queue_depth=1\nsecret=x", "a=b\n", "a=b c", "a=b\tc", "a=b\x00", "a= b",
		",", "a,", ",a", "a,,b",
		"-o", "--id=admin", "noshare,-x", "noshare,--keyring=/tmp/k",
		"a=b=c", "=b", "a==b", "=", "a=b,=c",
		"a=b;c", "a=$(id)", "a=`id`", "a=/dev/sda", "a=b\\c", "a=é", "ö=1", "a=\"b\"",
	} {
		if err := ValidateMapOptions(s); err == nil {
			t.Errorf("ValidateMapOptions(%q) accepted", s)
		}
		rejects(t, sc("mapOptions", s), "mapOptions")
	}
}

func equalVolume(a, b Volume) bool {
	return slices.Equal(a.Monitors, b.Monitors) && a.ClusterID == b.ClusterID && a.Pool == b.Pool && a.DataPool == b.DataPool &&
		a.Features == b.Features && a.FsType == b.FsType && a.Prefix == b.Prefix && a.Mounter == b.Mounter &&
		a.MapOpts == b.MapOpts && a.AdminID == b.AdminID && a.UserID == b.UserID && a.Claim == b.Claim && a.Encryption == b.Encryption
}
