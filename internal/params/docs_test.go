package params

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var backticked = regexp.MustCompile("`([^`]+)`")

// documentedKeys returns, per "## " section of docs/parameters.md, the
// backticked names in the first column of its table.
func documentedKeys(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("../../docs/parameters.md")
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	keys := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if title, ok := strings.CutPrefix(line, "## "); ok {
			section = title
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			keys[section] = append(keys[section], m[1])
		}
	}
	return keys
}

func TestDocsParametersListsExactlyTheKnownKeys(t *testing.T) {
	docs := documentedKeys(t)
	for section, want := range map[string][]string{
		"":                               Keys, // the first table, before any "## "
		"VolumeSnapshotClass parameters": SnapshotKeys,
	} {
		got := docs[section]
		for _, k := range want {
			if !slices.Contains(got, k) {
				t.Errorf("docs/parameters.md %q: no row for parameter %s", section, k)
			}
		}
		for _, k := range got {
			if !slices.Contains(want, k) {
				t.Errorf("docs/parameters.md %q documents %s, which params does not accept", section, k)
			}
		}
	}
}
