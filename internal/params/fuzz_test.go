package params

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// kvLines reads "key=value" lines (split at the first '=') into a map.
func kvLines(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

func FuzzParseVolume(f *testing.F) {
	for _, s := range []string{
		"clusterID=c1",
		"clusterID=c1\npool=kube\ndataPool=ec\nimageFeatures=layering,exclusive-lock,object-map,fast-diff\nimageFormat=2",
		"monitors=10.0.0.1:6789,[::1]:6789\nadminId=kube\nuserId=node\nfsType=ext4\nadminSecretName=s",
		"clusterID=c1\ncsi.storage.k8s.io/fstype=xfs\nfsType=ext4",
		"clusterID=c1\nmounter=rbd-nbd\nmapOptions=io-timeout=30,exclusive",
		"clusterID=c1\nmapOptions=a=b c",
		"clusterID=c1\nvolumeNamePrefix=k8s-\ncsi.storage.k8s.io/pvc/name=data",
		"clusterID=c1\nmonitors=m",
		"clusterID=c1\nimageFeatures=fast-diff",
		"clusterID=c1\nbogus=1",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in := kvLines(s)
		v, err := ParseVolume(in)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if (v.ClusterID == "") == (len(v.Monitors) == 0) {
			t.Fatalf("%q: want exactly one of clusterID and monitors, got %+v", in, v)
		}
		if v.ClusterID != "" && clusterconfig.ValidateClusterID(v.ClusterID) != nil {
			t.Fatalf("%q: accepted clusterID %q", in, v.ClusterID)
		}
		for _, m := range v.Monitors {
			if ceph.ValidateMonitor(m) != nil {
				t.Fatalf("%q: accepted monitor %q", in, m)
			}
		}
		if ceph.ValidatePoolName(v.Pool) != nil || (v.DataPool != "" && ceph.ValidatePoolName(v.DataPool) != nil) {
			t.Fatalf("%q: accepted pools %q, %q", in, v.Pool, v.DataPool)
		}
		if v.Features == 0 || v.Features&^ceph.UserFeatures != 0 {
			t.Fatalf("%q: accepted features %v", in, v.Features)
		}
		if v.FsType != "" && !slices.Contains(FsTypes, v.FsType) || v.Mounter != "" && !slices.Contains(mapper.Names(), v.Mounter) {
			t.Fatalf("%q: accepted fs type %q, mounter %q", in, v.FsType, v.Mounter)
		}
		if ValidateMapOptions(v.MapOpts) != nil || ceph.ValidateUser(v.AdminID) != nil || ceph.ValidateUser(v.UserID) != nil {
			t.Fatalf("%q: accepted %+v", in, v)
		}
		if n := ImageName(v.Prefix, "inst", "req"); !LooksGenerated(n) {
			t.Fatalf("%q: prefix %q gives image name %q that LooksGenerated refuses", in, v.Prefix, n)
		}
	})
}

// rotateKey replaces every base64 character of k with the next one in the
// alphabet, which keeps its length, padding and validity: an error message
// that does not echo the key reads the same for both.
func rotateKey(k string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := []byte(k) // bytewise: invalid UTF-8 stays as it is
	for i, c := range b {
		if j := strings.IndexByte(alphabet, c); j >= 0 {
			b[i] = alphabet[(j+1)%len(alphabet)]
		}
	}
	return string(b)
}

func FuzzCredentials(f *testing.F) {
	f.Add("kube", testKey, "", uint8(3), "admin")
	f.Add("", "", testKey, uint8(4), "kube")
	f.Add(testKey, "kube", "", uint8(3), "")
	f.Add(testKey, "", "", uint8(1), "")
	f.Add("kube", testKey[:20]+"\n"+testKey[20:], "", uint8(3), "")
	f.Add("kube", "", " "+testKey+"\n", uint8(5), "")
	f.Add("client.kube", "c2hvcnQ=", "", uint8(3), "")
	f.Fuzz(func(t *testing.T, user, userKey, key string, present uint8, legacyUser string) {
		build := func(userKey, key string) map[string]string {
			m := map[string]string{}
			if present&1 != 0 {
				m[SecretUserID] = user
			}
			if present&2 != 0 {
				m[SecretUserKey] = userKey
			}
			if present&4 != 0 {
				m[SecretKey] = key
			}
			return m
		}
		cr, err := Credentials(build(userKey, key), legacyUser)
		if err == nil {
			if ceph.ValidateUser(cr.User) != nil || ceph.ValidateKey(cr.Key) != nil || strings.ContainsFunc(cr.Key, unicode.IsSpace) {
				t.Fatalf("accepted user %q and a key that fails validation", cr.User)
			}
			return
		}
		_, err2 := Credentials(build(rotateKey(userKey), rotateKey(key)), legacyUser)
		if err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("error depends on the key's content: %q vs %v", err, err2)
		}
		for _, k := range []string{strings.TrimSpace(userKey), strings.TrimSpace(key)} {
			if k != "" && strings.Contains(err.Error(), k) && !strings.Contains(err2.Error(), k) {
				t.Fatalf("error %q reveals the key", err)
			}
		}
	})
}

func FuzzValidateMapOptions(f *testing.F) {
	for _, s := range []string{"", "noshare", "queue_depth=128,ms_mode=prefer-crc", "crush_location=host:a|rack:b",
		"a b", "a=b\nc", "-o", "a,-b", "a=b=c", "=b", "a,,b", "a=\x00", "a=-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateMapOptions(s) != nil {
			return
		}
		if strings.ContainsAny(s, " \n\t\r\v\f\x00") || strings.ContainsFunc(s, func(r rune) bool { return r > unicode.MaxASCII }) {
			t.Fatalf("accepted %q, which holds whitespace, NUL or non-ASCII", s)
		}
		if s == "" {
			return
		}
		for _, opt := range strings.Split(s, ",") {
			if opt == "" || opt[0] == '-' || opt[0] == '=' || strings.Count(opt, "=") > 1 {
				t.Fatalf("accepted %q with option %q", s, opt)
			}
		}
	})
}
