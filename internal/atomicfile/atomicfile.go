// Package atomicfile replaces files so that a crash leaves either the old
// or the new content, never a mix or nothing.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the names of the temporary files Write creates next to
// the target; directory listings skip names with it.
const TempPrefix = ".tmp-"

// Write replaces path with data (mode perm): it writes a uniquely named
// temporary file in the same directory, syncs it, renames it over path and
// syncs the directory, so the rename itself survives a crash.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// WriteVolatile replaces path with data like Write, so that readers never
// see a mix, but syncs nothing: after a power loss the file may hold the
// old content, the new, or nothing. It is for files whose meaning ends
// with the boot they were written in (what a running process was started
// with, its pid), which readers after a reboot must treat as absent
// anyway; a sync costs about half a millisecond each.
func WriteVolatile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, TempPrefix+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := writeFile(tmp, data, perm, durable); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !durable {
		return nil
	}
	if err := syncDirFunc(dir); err != nil {
		return fmt.Errorf("sync directory of %s: %w", path, err)
	}
	return nil
}

func writeFile(f *os.File, data []byte, perm os.FileMode, durable bool) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDirFunc is syncDir; tests replace it to see that Write calls it.
var syncDirFunc = syncDir

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
