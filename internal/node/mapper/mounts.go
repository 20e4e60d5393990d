package mapper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// mountAt returns the filesystem type mounted at path ("" when nothing is),
// from /proc/self/mountinfo. Reading mountinfo never touches the mounted
// filesystem, so a hung FUSE daemon cannot block it.
func mountAt(mountinfo, path string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	fstype := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mp, typ, ok := parseMountinfoLine(sc.Text())
		if ok && mp == path {
			fstype = typ // the last (topmost) mount wins
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading mount table: %w", err)
	}
	return fstype, nil
}

// parseMountinfoLine returns the mountpoint and fstype of a mountinfo line:
// "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw".
func parseMountinfoLine(line string) (mountpoint, fstype string, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 7 {
		return "", "", false
	}
	for i := 6; i < len(fields)-1; i++ {
		if fields[i] == "-" {
			return unescapeOctal(fields[4]), fields[i+1], true
		}
	}
	return "", "", false
}

// unescapeOctal undoes the kernel's \NNN escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// prober runs stat(2) on FUSE paths with a deadline. A stat into a hung
// FUSE daemon blocks in the kernel and cannot be cancelled, so the stat
// runs in a goroutine; at most one is in flight per path, so repeated
// health checks of a hung mount do not pile up goroutines.
type prober struct {
	mu       sync.Mutex
	inflight map[string]*probe
}

type probe struct {
	done chan struct{}
	err  error
}

// errProbeTimeout means the FUSE daemon did not answer in time.
var errProbeTimeout = errors.New("no answer from the FUSE daemon")

// stat returns nil, the stat error, or errProbeTimeout.
func (p *prober) stat(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pr := p.start(path)
	select {
	case <-pr.done:
		return pr.err
	case <-ctx.Done():
		return errProbeTimeout
	}
}

func (p *prober) start(path string) *probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight == nil {
		p.inflight = map[string]*probe{}
	}
	if pr, ok := p.inflight[path]; ok {
		return pr
	}
	pr := &probe{done: make(chan struct{})}
	p.inflight[path] = pr
	go func() {
		_, pr.err = os.Stat(path)
		p.mu.Lock()
		delete(p.inflight, path)
		p.mu.Unlock()
		close(pr.done)
	}()
	return pr
}

// isDeadFuse reports errors that mean the FUSE daemon behind a mount is
// gone (ENOTCONN after a crash, ECONNABORTED after an abort).
func isDeadFuse(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}
