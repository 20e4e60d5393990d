package mapper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The rig's cleanup checks that SecretDir is empty after each case.
func TestNBDKeyringIsRemovedOnEveryPathOfTheMapCall(t *testing.T) {
	tests := []struct {
		name    string
		map_    func() (string, string, error)
		wantErr bool
	}{
		{"map succeeds", func() (string, string, error) { return "/dev/nbd0\n", "", nil }, false},
		{"rbd-nbd fails", func() (string, string, error) {
			return "", "rbd-nbd: failed to open image: (2) No such file or directory", errors.New("exit status 1")
		}, true},
		{"deadline passes", func() (string, string, error) { return "", "", context.DeadlineExceeded }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := newNBDRig(t)
			rig.exec.handler = func(c Command) (string, string, error) {
				if c.Args[0] == "map" {
					return tc.map_()
				}
				return rig.defaultHandler(c)
			}
			rig.connect(t, "/dev/nbd0", "", false)
			_, err := rig.mapper(t).Map(context.Background(), nbdImage(), MapOptions{})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Map error %v, want error %t", err, tc.wantErr)
			}
			if n := len(rig.exec.keyrings); n != 1 {
				t.Fatalf("rbd-nbd map saw %d keyrings, want 1", n)
			}
		})
	}
}

func TestPrepareKeyringDirCreatesAPrivateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "keyrings")
	if err := PrepareKeyringDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v, want 0700", st.Mode().Perm())
	}
	// An existing, too open directory is made private.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := PrepareKeyringDir(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v after a second prepare, want 0700", st.Mode().Perm())
	}
}

// keyringHolderEnv makes TestKeyringHolderProcess act as a plugin that is
// in the middle of an rbd-nbd map when it gets killed.
const keyringHolderEnv = "RBDCSI_TEST_KEYRING_HOLDER_DIR"

func TestKeyringHolderProcess(t *testing.T) {
	dir := os.Getenv(keyringHolderEnv)
	if dir == "" {
		t.Skip("helper process of TestKeyringOfAKilledMapIsSweptAtStart; runs only when it starts it")
	}
	ex := &fakeExec{handler: func(c Command) (string, string, error) {
		if c.Args[0] == "map" {
			select {} // the map hangs until the process is killed
		}
		return "[]", "", nil
	}}
	m, err := New(RBDNBD, Config{SysfsRoot: t.TempDir(), SecretDir: dir, Exec: ex})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = m.Map(context.Background(), nbdImage(), MapOptions{})
}

func TestKeyringOfAKilledMapIsSweptAtStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keyrings")
	if err := PrepareKeyringDir(dir); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "not-ours")
	mustWrite(t, other, "x")

	cmd := exec.Command(os.Args[0], "-test.run=^TestKeyringHolderProcess$")
	cmd.Env = append(os.Environ(), keyringHolderEnv+"="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	left := waitForKeyring(t, dir)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Stat(left); err != nil {
		t.Fatalf("the killed map's keyring %s should still be there before the sweep: %v", left, err)
	}

	if err := PrepareKeyringDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(left)); !os.IsNotExist(err) {
		t.Fatalf("keyring directory %s survived the start-up sweep (stat: %v)", filepath.Dir(left), err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("the sweep removed a file it did not make: %v", err)
	}
}

// waitForKeyring returns the keyring file the helper wrote into dir.
func waitForKeyring(t *testing.T, dir string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), keyringPrefix) {
				p := filepath.Join(dir, e.Name(), "keyring")
				if _, err := os.Stat(p); err == nil {
					return p
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the helper process wrote no keyring within 30s")
	return ""
}
