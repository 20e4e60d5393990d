package driver

import (
	"strings"
	"testing"
)

// FuzzValidateMountFlags feeds arbitrary mount flags (a CO passes them from
// the StorageClass's mountOptions or the PV) to the node's check. Accepted
// flags are joined into the one argument after "mount -o", so each must be
// a single printable word that cannot start an option of mount itself.
func FuzzValidateMountFlags(f *testing.F) {
	for _, s := range []string{"noatime", "noatime\x1fdiscard", "-o\x1fremount", "a b", "", "ro,nosuid", "x\x00y", "context=\"system_u:object_r\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, joined string) {
		// The separator 0x1f is itself refused, so it can split the input
		// into several flags without hiding any byte from the check.
		flags := strings.Split(joined, "\x1f")
		got, err := validateMountFlags(flags)
		if err != nil {
			return
		}
		if len(got) != len(flags) {
			t.Fatalf("accepted %q but returned %q", flags, got)
		}
		for _, fl := range got {
			if fl == "" || fl[0] == '-' || strings.ContainsFunc(fl, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("accepted mount flag %q", fl)
			}
		}
	})
}
