package params

import (
	"encoding/base64"
	"strings"
	"testing"
)

// testKey is encoded as Ceph encodes a cephx AES key: type 1, creation
// time, secret length 16, secret.
var testKey = base64.StdEncoding.EncodeToString([]byte("\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00rbd-csi-unit-tes"))

func TestCredentialsAcceptsBothSecretShapes(t *testing.T) {
	tests := []struct {
		name       string
		secrets    map[string]string
		legacyUser string
		wantUser   string
	}{
		{"ceph-csi userID and userKey", map[string]string{"userID": "kube", "userKey": testKey}, "admin", "kube"},
		{"ceph-csi ignores the legacy user", map[string]string{"userID": "kube", "userKey": testKey}, "other", "kube"},
		{"in-tree key with adminId", map[string]string{"key": testKey}, "kube", "kube"},
		{"in-tree key defaults to admin", map[string]string{"key": testKey}, "", "admin"},
		{"in-tree key with a userID field", map[string]string{"userID": "node", "key": testKey}, "kube", "node"},
		{"other fields are ignored", map[string]string{"userID": "kube", "userKey": testKey, "note": "x"}, "", "kube"},
		{"key from a file ends in a newline", map[string]string{"userID": "kube", "userKey": testKey + "\n"}, "", "kube"},
		{"in-tree key with surrounding blanks", map[string]string{"key": " " + testKey + "\r\n"}, "kube", "kube"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cr, err := Credentials(tc.secrets, tc.legacyUser)
			if err != nil {
				t.Fatal(err)
			}
			if cr.User != tc.wantUser || cr.Key != testKey {
				t.Errorf("got user %q key %q, want %q %q", cr.User, cr.Key, tc.wantUser, testKey)
			}
		})
	}
}

func TestCredentialsRejectsBadSecretsWithoutEchoingTheKey(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("fifteen bytes!!"))
	tests := []struct {
		name       string
		secrets    map[string]string
		legacyUser string
		want       []string
	}{
		{"no secrets", nil, "admin", []string{"no secrets given", "userID", "userKey"}},
		{"userID without userKey", map[string]string{"userID": "kube"}, "", []string{"no userKey", "client.kube"}},
		{"userKey without userID", map[string]string{"userKey": testKey}, "", []string{"no userID"}},
		{"neither shape", map[string]string{"password": testKey, "user": "kube"}, "", []string{"neither", "present keys: password, user"}},
		{"userID with client. prefix", map[string]string{"userID": "client.kube", "userKey": testKey}, "", []string{"userID", `"client."`}},
		{"empty userID", map[string]string{"userID": "", "userKey": testKey}, "", []string{"userID"}},
		{"bad legacy user", map[string]string{"key": testKey}, "a b", []string{"adminId"}},
		{"userID and userKey swapped", map[string]string{"userID": testKey, "userKey": "kube"}, "", []string{"userID", "not a cephx user name"}},
		{"key pasted as userID, no key", map[string]string{"userID": testKey}, "", []string{"no userKey"}},
		{"empty key", map[string]string{"userID": "kube", "userKey": ""}, "", []string{"client.kube", "empty"}},
		{"blank key", map[string]string{"key": " \n"}, "kube", []string{"client.kube", "empty"}},
		{"not base64", map[string]string{"userID": "kube", "userKey": "not-base64-at-all!"}, "", []string{"not base64"}},
		{"too short", map[string]string{"userID": "kube", "userKey": short}, "", []string{"too short"}},
		{"too long", map[string]string{"userID": "kube", "userKey": strings.Repeat(testKey, 8)}, "", []string{"long"}},
		{"newline inside the key", map[string]string{"userID": "kube", "userKey": testKey[:20] + "\n" + testKey[20:]}, "", []string{"not base64"}},
		{"comma inside the key", map[string]string{"key": testKey + ",name=admin"}, "kube", []string{"not base64"}},
		{"space inside the key", map[string]string{"key": testKey[:20] + " " + testKey[20:]}, "kube", []string{"not base64"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cr, err := Credentials(tc.secrets, tc.legacyUser)
			if err == nil {
				t.Fatalf("accepted: %v", cr)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for field, v := range tc.secrets {
				isKey := field == SecretUserKey || field == SecretKey || v == testKey
				if k := strings.TrimSpace(v); isKey && k != "" && strings.Contains(msg, k) {
					t.Errorf("error %q reveals the key held in %s", msg, field)
				}
			}
		})
	}
}
