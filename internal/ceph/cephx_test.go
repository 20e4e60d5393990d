package ceph

import (
	"encoding/base64"
	"strings"
	"testing"
)

// cephxKey encodes secret as Ceph encodes a cephx AES key.
func cephxKey(secret []byte) string {
	raw := append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(len(secret)), 0}, secret...)
	return base64.StdEncoding.EncodeToString(raw)
}

func TestValidateKeyAcceptsCephxKeysOnlyAndNeverEchoesThem(t *testing.T) {
	good := cephxKey([]byte("0123456789abcdef"))
	if err := ValidateKey(good); err != nil {
		t.Fatalf("ValidateKey(cephx key) = %v", err)
	}
	if err := ValidateKey(cephxKey(make([]byte, 32))); err != nil {
		t.Fatalf("ValidateKey(AES-256 sized key) = %v", err)
	}
	for name, tc := range map[string]struct{ key, want string }{
		"empty":                {"", "empty"},
		"too long":             {strings.Repeat("A", 260), "long"},
		"line break inside":    {good[:8] + "\n" + good[8:], "line break"},
		"comma option":         {good + ",ro", "not base64"},
		"too short":            {base64.StdEncoding.EncodeToString([]byte("fifteen bytes!!")), "too short"},
		"not a cephx encoding": {base64.StdEncoding.EncodeToString([]byte("twenty-four bytes of it!")), "not an encoded cephx secret"},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidateKey(tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidateKey = %v, want an error saying %q", err, tc.want)
			}
			if tc.key != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.key)) {
				t.Errorf("error %q echoes the key", err)
			}
		})
	}
}

func TestPoolAndUserNamesFollowOneRule(t *testing.T) {
	for _, name := range []string{"rbd", "kube-pool.1", "A_b", strings.Repeat("p", 64)} {
		if err := ValidatePoolName(name); err != nil {
			t.Errorf("ValidatePoolName(%q) = %v", name, err)
		}
		if err := ValidateUser(name); err != nil {
			t.Errorf("ValidateUser(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", "-x", "a b", "a/b", "a,b", "mön", strings.Repeat("p", 65)} {
		if ValidatePoolName(name) == nil {
			t.Errorf("ValidatePoolName(%q) accepted", name)
		}
		if ValidateUser(name) == nil {
			t.Errorf("ValidateUser(%q) accepted", name)
		}
	}
	if err := ValidateUser("client.admin"); err == nil || !strings.Contains(err.Error(), `"client."`) {
		t.Errorf("ValidateUser(client.admin) = %v, want the prefix named", err)
	}
}
