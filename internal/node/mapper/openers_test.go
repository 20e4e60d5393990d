package mapper

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A loop device stands in for rbd0/nbd0 (this machine's kernel has
// neither): openedBy must find a process holding it open, ignore the
// processes named as servers, and find none once the holder is gone.
func TestOpenedByFindsProcessesHoldingABlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "losetup", "-f", "--show", file).Output()
	if err != nil {
		t.Skipf("no loop device available: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })

	if got, err := openedBy(ctx, dev); err != nil || got != "" {
		t.Fatalf("openedBy on an idle device: %q, %v; want none", got, err)
	}
	fh, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "60")
	holder.Stdin = fh // the child holds the device as its fd 0
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })

	got, err := openedBy(ctx, dev)
	if want := strconv.Itoa(holder.Process.Pid) + " (sleep)"; err != nil || got != want {
		t.Fatalf("openedBy while held: %q, %v; want %q", got, err, want)
	}
	if got, err := openedBy(ctx, dev, "sleep"); err != nil || got != "" {
		t.Fatalf("openedBy ignoring the server: %q, %v; want none", got, err)
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()
	if got, err := openedBy(ctx, dev); err != nil || got != "" {
		t.Fatalf("openedBy after the holder exited: %q, %v; want none", got, err)
	}
}
