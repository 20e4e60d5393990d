package mapper

import (
	"strings"
	"testing"
)

// FuzzParseOptions feeds arbitrary StorageClass mapOptions to every mapper's
// parser. Whatever is accepted must be options of the mapper's allowlist,
// and the string the mapper then writes into sysfs or passes as one -o
// argument must hold no whitespace, control character or leading dash that
// could start another token or argument, and must parse back to itself.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{"", "queue_depth=128", "exclusive,notrim", "crush_location=host:a|rack:b",
		"io-timeout=30", "queue_depth=1 2", "a,-b", "name=admin", "secret=x", "ms_mode=crc\nfoo", "lock_on_read,lock_on_read"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, extra string) {
		for _, name := range Names() {
			opts, err := parseOptions(name, extra)
			if err != nil {
				continue
			}
			allowed, _ := allowlistFor(name)
			for _, o := range opts {
				if _, ok := allowed[o.Name]; !ok {
					t.Fatalf("%s accepted %q, which is not in its allowlist", name, o.Name)
				}
			}
			joined := joinOptions(opts)
			if strings.ContainsFunc(joined, func(r rune) bool { return r <= ' ' || r == 0x7f || r > 0x7e }) {
				t.Fatalf("%s: options %q reach the command line with whitespace, control or non-ASCII bytes", name, joined)
			}
			if strings.HasPrefix(joined, "-") || strings.Contains(joined, ",-") {
				t.Fatalf("%s: options %q hold an option starting with '-'", name, joined)
			}
			again, err := parseOptions(name, joined)
			if err != nil || joinOptions(again) != joined {
				t.Fatalf("%s: %q does not parse back to itself: %q, %v", name, joined, joinOptions(again), err)
			}
		}
	})
}
