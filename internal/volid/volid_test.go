package volid

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		id   ID
		want string
	}{
		{"cluster ID", ID{ClusterID: "c1", PoolID: 3, Image: "csi-vol-0123"}, "1/c1/3/csi-vol-0123"},
		{"uuid cluster ID", ID{ClusterID: "b9127830-b0cc-4e34-aa47-9d1a2e9949a8", PoolID: 0, Image: "img"}, "1/b9127830-b0cc-4e34-aa47-9d1a2e9949a8/0/img"},
		{"IPv4 monitors", ID{Monitors: []string{"10.0.0.1:6789", "10.0.0.2:6789"}, PoolID: 12, Image: "img"}, "1/m=10.0.0.1:6789,10.0.0.2:6789/12/img"},
		{"IPv6 monitor", ID{Monitors: []string{"[::1]:6789"}, PoolID: 1, Image: "img"}, "1/m=[::1]:6789/1/img"},
		{"host names without ports", ID{Monitors: []string{"mon-a.rook-ceph.svc", "mon-b"}, PoolID: 1, Image: "img"}, "1/m=mon-a.rook-ceph.svc,mon-b/1/img"},
		{"snapshot", ID{ClusterID: "c1", PoolID: 1, Image: "img@snap-1"}, "1/c1/1/img@snap-1"},
		{"largest pool id", ID{ClusterID: "c", PoolID: math.MaxInt64, Image: "i"}, "1/c/" + strconv.FormatInt(math.MaxInt64, 10) + "/i"},
		{"volume with a user is version 2", ID{ClusterID: "c1", PoolID: 3, Image: "csi-vol-0123", User: "kube"}, "2/c1/3/csi-vol-0123/kube"},
		{"snapshot with a user", ID{ClusterID: "c1", PoolID: 3, Image: "img@snap-1", User: "kube.ns_1-a"}, "2/c1/3/img@snap-1/kube.ns_1-a"},
		{"monitors with a user", ID{Monitors: []string{"[::1]:6789", "10.0.0.2"}, PoolID: 0, Image: "img", User: "k"}, "2/m=[::1]:6789,10.0.0.2/0/img/k"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.id.Encode()
			if err != nil || s != tc.want {
				t.Fatalf("Encode() = %q, %v; want %q", s, err, tc.want)
			}
			back, err := Decode(s)
			if err != nil {
				t.Fatalf("Decode(%q): %v", s, err)
			}
			if !sameID(back, tc.id) {
				t.Errorf("Decode(%q) = %+v, want %+v", s, back, tc.id)
			}
		})
	}
}

func TestEncodePrefersTheClusterIDOverMonitors(t *testing.T) {
	id := ID{ClusterID: "c1", Monitors: []string{"10.0.0.1:6789"}, PoolID: 1, Image: "img"}
	s, err := id.Encode()
	if err != nil || s != "1/c1/1/img" {
		t.Fatalf("Encode() = %q, %v", s, err)
	}
}

func TestEncodeRefusesIDsOverTheCSILimitSayingWhatToChange(t *testing.T) {
	var mons []string
	for i := range 8 {
		mons = append(mons, "mon-"+strconv.Itoa(i)+".example.com:6789")
	}
	for _, id := range []ID{
		{Monitors: mons, PoolID: 1, Image: "csi-vol-0123456789abcdef0123456789abcdef"},
		{ClusterID: strings.Repeat("c", 36), PoolID: math.MaxInt64, Image: strings.Repeat("i", 96)},
	} {
		s, err := id.Encode()
		if err == nil {
			t.Errorf("Encode() = %q (%d bytes), accepted", s, len(s))
			continue
		}
		for _, want := range []string{"128", "clusterID", "volumeNamePrefix"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	}
}

func TestEncodeRefusesFieldsDecodeWouldReject(t *testing.T) {
	tests := map[string]ID{
		"no cluster at all":     {PoolID: 1, Image: "img"},
		"slash in cluster ID":   {ClusterID: "a/b", PoolID: 1, Image: "img"},
		"bad monitor":           {Monitors: []string{"a b"}, PoolID: 1, Image: "img"},
		"comma in monitor":      {Monitors: []string{"a,b"}, PoolID: 1, Image: "img"},
		"empty monitor":         {Monitors: []string{""}, PoolID: 1, Image: "img"},
		"negative pool":         {ClusterID: "c", PoolID: -1, Image: "img"},
		"empty image":           {ClusterID: "c", PoolID: 1},
		"slash in image":        {ClusterID: "c", PoolID: 1, Image: "a/b"},
		"image starting with -": {ClusterID: "c", PoolID: 1, Image: "-img"},
		"two snapshots":         {ClusterID: "c", PoolID: 1, Image: "a@b@c"},
		"user with client.":     {ClusterID: "c", PoolID: 1, Image: "img", User: "client.kube"},
		"user with slash":       {ClusterID: "c", PoolID: 1, Image: "img", User: "a/b"},
		"user with space":       {ClusterID: "c", PoolID: 1, Image: "img", User: "a b"},
		"user starting with -":  {ClusterID: "c", PoolID: 1, Image: "img", User: "-kube"},
		"user over 64 bytes":    {ClusterID: "c", PoolID: 1, Image: "img", User: strings.Repeat("u", 65)},
	}
	for name, id := range tests {
		if s, err := id.Encode(); err == nil {
			t.Errorf("%s: Encode() = %q, accepted", name, s)
		}
	}
}

func TestDecodeRejectsMalformedIDs(t *testing.T) {
	for _, s := range []string{
		"", "1", "1/c1", "1/c1/0", "1/c1/0/img/extra", "1/c1/0/img/", "/1/c1/0/img", "1//c1/0/img",
		"2/c1/0/img", "01/c1/0/img", "v1/c1/0/img",
		"1//0/img", "1/c1//img", "1/c1/0/",
		"1/c1/00/img", "1/c1/01/img", "1/c1/-1/img", "1/c1/-0/img", "1/c1/+1/img", "1/c1/0x1/img", "1/c1/ 1/img", "1/c1/1e3/img",
		"1/c1/9223372036854775808/img",
		"1/m=/0/img", "1/m=a:6789,,b:6789/0/img", "1/m=a:6789,/0/img", "1/m=a b/0/img", "1/m=::1/0/img", "1/m=a:0/0/img",
		"1/c d/0/img", "1/../0/img", "1/c=1/0/img", "1/" + strings.Repeat("c", 37) + "/0/img",
		"1/c1/0/-img", "1/c1/0/.img", "1/c1/0/..", "1/c1/0/img@", "1/c1/0/@snap", "1/c1/0/a@b@c", "1/c1/0/img@-snap",
		"1/c1/0/img name", "1/c1/0/img\n", "1/c1/0/ïmg", "1/c1/0/" + strings.Repeat("i", 97),
		// version 2: exactly one user field, a valid cephx user
		"2/c1/0/img", "1/c1/0/img/kube", "2/c1/0/img/", "2/c1/0/img/kube/x", "02/c1/0/img/kube", "3/c1/0/img/kube",
		"2/c1/0/img/client.kube", "2/c1/0/img/-kube", "2/c1/0/img/ku be", "2/c1/0/img/kübe", "2/c1/0/img/" + strings.Repeat("u", 65),
		"2/c1/01/img/kube", "2/m=/0/img/kube", "2/c1/0/-img/kube", "2//0/img/kube",
	} {
		id, err := Decode(s)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) = %+v, %v; want ErrMalformed", s, id, err)
		}
	}
}

func TestDecodeRefusesIDsOverTheCSILimit(t *testing.T) {
	s := "1/c1/0/" + strings.Repeat("i", MaxLen-len("1/c1/0/")+1)
	_, err := Decode(s)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "128") {
		t.Errorf("Decode(%d bytes) = %v; want ErrMalformed naming the limit", len(s), err)
	}
}

func TestValidateImageNameAcceptsGeneratedNamesAndSnapshots(t *testing.T) {
	for _, name := range []string{"csi-vol-0123456789abcdef0123456789abcdef", "img", "_x", "a.b", "img@snap", "img@snap.1", strings.Repeat("i", 96)} {
		if err := ValidateImageName(name); err != nil {
			t.Errorf("ValidateImageName(%q) = %v", name, err)
		}
	}
}

func sameID(a, b ID) bool {
	if b.ClusterID != "" {
		b.Monitors = nil // the ID names the cluster; Encode leaves monitors out
	}
	return a.ClusterID == b.ClusterID && slices.Equal(a.Monitors, b.Monitors) && a.PoolID == b.PoolID && a.Image == b.Image && a.User == b.User
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"1/c1/3/csi-vol-0123", "1/m=10.0.0.1:6789,10.0.0.2:6789/12/img", "1/m=[::1]:6789/1/img", "1/c1/1/img@snap",
		"1/c1/01/img", "1/c1/-1/img", "1/m=/0/img", "1/c1/0/a@b@c", "1//0/img", "1/c1/0/img/x", "",
		"2/c1/3/csi-vol-0123/kube", "2/m=[::1]:6789/1/img@snap/kube", "2/c1/3/img", "2/c1/3/img/client.kube", "2/c1/3/img/a/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Decode(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		// Every accepted ID is one Encode produces, byte for byte.
		again, err := id.Encode()
		if err != nil || again != s {
			t.Fatalf("Decode(%q) = %+v, which encodes as %q, %v", s, id, again, err)
		}
	})
}

func FuzzEncodeDecode(f *testing.F) {
	f.Add("c1", "", int64(3), "csi-vol-0123", "")
	f.Add("", "10.0.0.1:6789,10.0.0.2:6789", int64(0), "img", "")
	f.Add("", "[::1]:6789", int64(1), "img@snap", "")
	f.Add("c1", "mon-a:6789", int64(-1), "img", "")
	f.Add("a/b", "", int64(1), "img", "")
	f.Add("", "", int64(1), "img", "")
	f.Add("c1", "", int64(1), "a@b@c", "")
	f.Add("c1", "", int64(3), "csi-vol-0123", "kube")
	f.Add("", "10.0.0.1:6789", int64(3), "img@snap", "client.kube")
	f.Add("c1", "", int64(3), "img", "a/b")
	f.Fuzz(func(t *testing.T, cluster, mons string, pool int64, image, user string) {
		id := ID{ClusterID: cluster, PoolID: pool, Image: image, User: user}
		if mons != "" {
			id.Monitors = strings.Split(mons, ",")
		}
		s, err := id.Encode()
		if err != nil {
			return
		}
		if len(s) > MaxLen {
			t.Fatalf("Encode(%+v) = %q, %d bytes", id, s, len(s))
		}
		if wantV1 := user == ""; wantV1 != strings.HasPrefix(s, "1/") {
			t.Fatalf("Encode(%+v) = %q: version 1 exactly when no user is given", id, s)
		}
		back, err := Decode(s)
		if err != nil {
			t.Fatalf("Encode(%+v) = %q, which Decode refuses: %v", id, s, err)
		}
		if !sameID(back, id) {
			t.Fatalf("Encode(%+v) = %q, which decodes as %+v", id, s, back)
		}
	})
}

func TestSnapshotIDsRoundTripAndStayApartFromVolumes(t *testing.T) {
	vol := ID{ClusterID: "prod", PoolID: 3, Image: "csi-vol-0123456789abcdef0123456789abcdef"}
	snap := vol
	snap.Image = "csi-snap-0123456789abcdef0123456789abcdef@csi-snap"
	enc, err := snap.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	image, name, ok := dec.SplitSnapshot()
	tests := []struct {
		name string
		ok   bool
	}{
		{"decoded snapshot is a snapshot", dec.IsSnapshot() && ok},
		{"image survives", image == "csi-snap-0123456789abcdef0123456789abcdef"},
		{"snapshot name survives", name == "csi-snap"},
		{"volume is no snapshot", !vol.IsSnapshot()},
		{"fits the CSI limit", len(enc) <= MaxLen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("failed for %q", enc)
			}
		})
	}
}

func TestVersion1IDsDecodeAsBeforeWithNoUser(t *testing.T) {
	// IDs handed out before version 2 existed must name the same image and
	// no user, so every call treats them as it always did.
	for _, s := range []string{"1/c1/3/csi-vol-0123", "1/m=10.0.0.1:6789/0/csi-snap-0123@csi-snap"} {
		id, err := Decode(s)
		if err != nil || id.User != "" {
			t.Fatalf("Decode(%q) = %+v, %v", s, id, err)
		}
		again, err := id.Encode()
		if err != nil || again != s {
			t.Errorf("Decode(%q) encodes back as %q, %v", s, again, err)
		}
	}
}

func TestEncodeOverTheLimitWithAUserSuggestsAShorterUser(t *testing.T) {
	id := ID{ClusterID: strings.Repeat("c", 36), PoolID: 1, Image: "csi-vol-0123456789abcdef0123456789abcdef", User: strings.Repeat("u", 64)}
	_, err := id.Encode()
	if err == nil || !strings.Contains(err.Error(), "adminId") {
		t.Fatalf("Encode() error = %v; want one naming adminId", err)
	}
}
