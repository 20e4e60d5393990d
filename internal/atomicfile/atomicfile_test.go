package atomicfile

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestWriteReplacesContentAndLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	for _, content := range []string{"first", "second, longer"} {
		if err := Write(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteIntoMissingDirectoryFailsNamingThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "state")
	err := Write(path, []byte("x"), 0o600)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Write = %v, want an error naming %s", err, path)
	}
}

// Concurrent writers of one path each get a temporary file of their own:
// with a fixed temporary name they would write into each other's file.
func TestConcurrentWritesUseUniqueTemporaryFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	const writers = 16
	want := map[string]bool{}
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		content := strings.Repeat(strconv.Itoa(i%10), 64<<10+i) // big enough to interleave
		want[content] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Write(path, []byte(content), 0o600)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !want[string(got)] {
		t.Fatalf("final content (%d bytes) is none of the writes: a mix", len(got))
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d entries left in the directory, want only the file", len(entries))
	}
}

func TestWriteVolatileReplacesContentWithoutSyncing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pid")
	orig := syncDirFunc
	syncDirFunc = func(d string) error {
		t.Errorf("WriteVolatile synced %s", d)
		return orig(d)
	}
	t.Cleanup(func() { syncDirFunc = orig })
	for _, content := range []string{"123", "4567"} {
		if err := WriteVolatile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("stat %v, %v; want mode 0600", st, err)
	}
}

func TestWriteSyncsTheDirectoryAfterTheRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	var synced []string
	orig := syncDirFunc
	syncDirFunc = func(d string) error {
		// The rename must be done by now: syncing before it would not
		// make the new name durable.
		if b, err := os.ReadFile(path); err != nil || string(b) != "x" {
			t.Errorf("directory synced before the rename: %q, %v", b, err)
		}
		synced = append(synced, d)
		return orig(d)
	}
	t.Cleanup(func() { syncDirFunc = orig })
	if err := Write(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Fatalf("synced %v, want [%s]", synced, dir)
	}
}

// Every file the plugins keep across a crash is written through Write: a
// direct os.WriteFile or os.Rename elsewhere would skip the syncs or the
// unique temporary name.
func TestNoOtherCodeWritesOrRenamesFilesDirectly(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	for _, top := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			// test helper packages (crypttest, backendtest) fake a kernel
			// or a cluster for tests; they keep no state across a crash
			if dir := filepath.Base(filepath.Dir(p)); dir == "atomicfile" || strings.HasSuffix(dir, "test") {
				return nil
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "os" && (sel.Sel.Name == "WriteFile" || sel.Sel.Name == "Rename") {
					t.Errorf("%s: os.%s; write state with atomicfile.Write", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
