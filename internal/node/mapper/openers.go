package mapper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// openedBy returns a process (as "PID (COMM)") that holds block device
// dev open, "" if none, found by scanning /proc/*/fd as fuser does: the
// kernel publishes no open count for a block device. It is needed where
// unmapping does not refuse an open device by itself: `rbd-nbd unmap`
// disconnects it, and the holder's I/O then fails (seen on Debian's 6.1
// kernel, make test-kernel). Processes named in servers are ignored (the
// daemon serving the device). The scan runs under ctx: a stat can block
// on a file of a hung FUSE mount.
func openedBy(ctx context.Context, dev string, servers ...string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		return "", err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return "", nil
	}
	found := make(chan string, 1)
	go func() { found <- scanOpeners(st.Rdev, servers) }()
	select {
	case p := <-found:
		return p, nil
	case <-ctx.Done():
		return "", fmt.Errorf("looking for processes holding %s: %w", dev, ctx.Err())
	}
}

func scanOpeners(rdev uint64, servers []string) string {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		// sockets, pipes, anon inodes: never a block device
		if err != nil || !strings.HasPrefix(target, "/") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK || st.Rdev != rdev {
			continue
		}
		proc := filepath.Dir(filepath.Dir(fd))
		comm, _ := os.ReadFile(filepath.Join(proc, "comm"))
		name := strings.TrimSpace(string(comm))
		if !slices.Contains(servers, name) {
			return filepath.Base(proc) + " (" + name + ")"
		}
	}
	return ""
}

// waitUnopened waits up to busyGrace for dev to have no opener: udev
// probes a block device for a moment after each close of a writer.
func waitUnopened(ctx context.Context, dev string, servers ...string) (string, error) {
	deadline := time.Now().Add(busyGrace)
	for {
		holder, err := openedBy(ctx, dev, servers...)
		if err != nil || holder == "" || time.Now().After(deadline) {
			return holder, err
		}
		select {
		case <-ctx.Done():
			return holder, nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
