// Package docs holds the project's reference documentation; its tests keep
// the Markdown honest: the README short and every relative link (and its
// #anchor) pointing at something that exists.
package docs

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeMaxLines is the README's budget: the newcomer's commands, the
// setup, the installation and a table of docs; references live in docs/.
const readmeMaxLines = 220

// TestREADMEStaysShort fails when the README grows past its budget, so that
// new features land in docs/ with a line of summary in the README.
func TestREADMEStaysShort(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n >= readmeMaxLines {
		t.Errorf("README.md has %d lines, want fewer than %d: move the details to docs/ and link them", n, readmeMaxLines)
	}
}

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`^#{1,6}\s+(.*)$`)
	fenceRE   = regexp.MustCompile("^\\s*```")
)

// slug is GitHub's anchor for a heading: lower case, punctuation other than
// '-' and '_' dropped, spaces to '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdFile is what the link check needs of one Markdown file.
type mdFile struct {
	anchors map[string]bool
	links   []string // relative targets, as written
}

func readMarkdown(t *testing.T, path string) mdFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := mdFile{anchors: map[string]bool{}}
	inFence := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			md.anchors[slug(strings.ReplaceAll(m[1], "`", ""))] = true
		}
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			if target := m[1]; !strings.Contains(target, "://") && !strings.HasPrefix(target, "mailto:") {
				md.links = append(md.links, target)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return md
}

// TestRelativeLinksResolve fails for a link in any Markdown file of the
// repository whose file, or whose #anchor in a Markdown target, is gone:
// sections move between the README and docs/, and links must follow.
func TestRelativeLinksResolve(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]mdFile{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "vendor" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files[path] = readMarkdown(t, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, md := range files {
		rel, _ := filepath.Rel(root, path)
		for _, link := range md.links {
			target, anchor, _ := strings.Cut(link, "#")
			targetPath := path
			if target != "" {
				targetPath = filepath.Join(filepath.Dir(path), target)
				if _, err := os.Stat(targetPath); err != nil {
					t.Errorf("%s: link %q: %s does not exist", rel, link, target)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(targetPath, ".md") {
				continue
			}
			if tf, ok := files[targetPath]; ok && !tf.anchors[anchor] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", rel, link, anchor, target)
			}
		}
	}
}

func TestSlug(t *testing.T) {
	tests := map[string]string{
		"Single writer across nodes":                     "single-writer-across-nodes",
		"Encryption key (KEK)":                           "encryption-key-kek",
		"rbd-nbd across a node plugin container restart": "rbd-nbd-across-a-node-plugin-container-restart",
		"A container restart (rbd-nbd)":                  "a-container-restart-rbd-nbd",
	}
	for in, want := range tests {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}
