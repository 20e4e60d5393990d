package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// flagRow is one row of the table in docs/flags.md: "| `--name` | `default` | ...".
var flagRow = regexp.MustCompile("^\\| `-{1,2}([a-z-]+)` \\| (?:`([^`]*)`)? *\\|")

// documentedFlags reads the flag table of docs/flags.md: name to default.
func documentedFlags(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../docs/flags.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := flagRow.FindStringSubmatch(line); m != nil {
			rows[m[1]] = m[2]
		}
	}
	return rows
}

// ownFlags are the flags parseFlags defines, with klog's -v (documented
// for its meaning here) but not klog's other flags.
func ownFlags(t *testing.T) map[string]*flag.Flag {
	t.Helper()
	fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
	if _, err := parseFlags(fs, nil); err != nil {
		t.Fatal(err)
	}
	klogOnly := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogOnly)
	out := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if klogOnly.Lookup(f.Name) == nil || f.Name == "v" {
			out[f.Name] = f
		}
	})
	return out
}

func TestDocsFlagsHasOneRowPerFlagWithItsDefault(t *testing.T) {
	rows := documentedFlags(t)
	flags := ownFlags(t)
	for name, f := range flags {
		doc, ok := rows[name]
		if !ok {
			t.Errorf("flag --%s has no row in docs/flags.md", name)
			continue
		}
		if !sameDefault(f.DefValue, doc) {
			t.Errorf("flag --%s: docs/flags.md gives default %q, the code %q", name, doc, f.DefValue)
		}
	}
	for name := range rows {
		if _, ok := flags[name]; !ok {
			t.Errorf("docs/flags.md documents --%s, which rbd-csi does not define", name)
		}
	}
}

// sameDefault compares a flag's default with the documented one: durations
// by value ("10m" is "10m0s"), and an empty cell for false or "".
func sameDefault(code, doc string) bool {
	if code == doc || (doc == "" && code == "false") {
		return true
	}
	c, err1 := time.ParseDuration(code)
	d, err2 := time.ParseDuration(doc)
	return err1 == nil && err2 == nil && c == d
}
