package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotateKEKFlags(t *testing.T) {
	const oldKEK = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64
	const newKEK = "6665646362613938373635343332313066656463626139383736353433323130"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldFile, newFile, badFile := write("old", oldKEK+"\n"), write("new", newKEK), write("bad", "secret-but-short")
	for _, tc := range []struct {
		name  string
		f     rotateFlags
		stdin string
		want  string // a text of the error; "" for success
	}{
		{name: "both keys from files", f: rotateFlags{pool: "kube", oldFile: oldFile, newFile: newFile}},
		{name: "the new key from stdin", f: rotateFlags{pool: "kube", oldFile: oldFile, newFile: "-"}, stdin: newKEK},
		{name: "no pool", f: rotateFlags{oldFile: oldFile, newFile: newFile}, want: "--pool is required"},
		{name: "no new key file", f: rotateFlags{pool: "kube", oldFile: oldFile}, want: "--new-kek-file are required"},
		{name: "both from stdin", f: rotateFlags{pool: "kube", oldFile: "-", newFile: "-"}, want: "cannot both be stdin"},
		{name: "a missing file names its flag", f: rotateFlags{pool: "kube", oldFile: filepath.Join(dir, "nope"), newFile: newFile}, want: "--old-kek-file"},
		{name: "a bad key names its flag, not its content", f: rotateFlags{pool: "kube", oldFile: oldFile, newFile: badFile}, want: "--new-kek-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldK, newK, err := tc.f.keys(strings.NewReader(tc.stdin))
			if tc.want == "" {
				if err != nil || oldK == nil || newK == nil || oldK.KEKID() == newK.KEKID() {
					t.Fatalf("keys: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
			for _, secret := range []string{oldKEK, newKEK, "secret-but-short"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatal("the error quotes a key")
				}
			}
		})
	}
}
