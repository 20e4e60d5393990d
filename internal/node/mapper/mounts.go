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

	"golang.org/x/sys/unix"
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

// prober runs stat(2) and getxattr(2) on FUSE paths with a deadline. A
// call into a hung FUSE daemon blocks in the kernel and cannot be
// cancelled, so it runs in a goroutine; at most one of each kind is in
// flight per path, so repeated probes of a hung mount do not pile up
// goroutines.
type prober struct {
	mu       sync.Mutex
	inflight map[string]*probe
}

type probe struct {
	done chan struct{}
	size int64
	err  error
}

// errProbeTimeout means the FUSE daemon did not answer in time.
var errProbeTimeout = errors.New("no answer from the FUSE daemon")

// stat returns nil, the stat error, or errProbeTimeout. A stat of path
// already in flight is joined: any answer shows whether the daemon serves.
func (p *prober) stat(ctx context.Context, path string, timeout time.Duration) error {
	pr, _ := p.start("stat\x00"+path, func() (int64, error) {
		st, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	})
	_, err := pr.wait(ctx, timeout)
	return err
}

// xattr reads extended attribute name of path, which a FUSE daemon always
// answers itself (the kernel caches no attribute values): nil, the error,
// or errProbeTimeout. A read of the same path in flight is joined.
func (p *prober) xattr(ctx context.Context, path, name string, timeout time.Duration) error {
	pr, _ := p.start("xattr\x00"+path, func() (int64, error) {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(path, name, buf)
		if err != nil {
			return 0, &os.PathError{Op: "getxattr " + name, Path: path, Err: err}
		}
		return int64(n), nil
	})
	_, err := pr.wait(ctx, timeout)
	return err
}

// freshSize returns path's size as the FUSE daemon reports it now, past
// the kernel's attribute cache (statx with AT_STATX_FORCE_SYNC), which
// also updates the size the kernel keeps for the file. An earlier query
// still in flight is not joined (its answer may predate what the caller
// waits for): that fails with errProbeTimeout.
func (p *prober) freshSize(ctx context.Context, path string, timeout time.Duration) (int64, error) {
	pr, started := p.start("size\x00"+path, func() (int64, error) { return statxSize(path) })
	if !started {
		return 0, fmt.Errorf("%w: an earlier size query of %s is still pending", errProbeTimeout, path)
	}
	return pr.wait(ctx, timeout)
}

// statxSize stats path with AT_STATX_FORCE_SYNC. Kernels without statx
// (before 4.11) get a plain stat, which may return a cached size.
func statxSize(path string) (int64, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_FORCE_SYNC, unix.STATX_SIZE, &stx)
	if errors.Is(err, unix.ENOSYS) {
		st, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	if err != nil {
		return 0, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return int64(stx.Size), nil
}

// start runs fn in a goroutine under key, unless a probe under key is in
// flight: then it returns that one and started is false.
func (p *prober) start(key string, fn func() (int64, error)) (pr *probe, started bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight == nil {
		p.inflight = map[string]*probe{}
	}
	if pr, ok := p.inflight[key]; ok {
		return pr, false
	}
	pr = &probe{done: make(chan struct{})}
	p.inflight[key] = pr
	go func() {
		pr.size, pr.err = fn()
		p.mu.Lock()
		delete(p.inflight, key)
		p.mu.Unlock()
		close(pr.done)
	}()
	return pr, true
}

// wait returns the probe's result, or errProbeTimeout when ctx or timeout
// ends first.
func (pr *probe) wait(ctx context.Context, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-pr.done:
		return pr.size, pr.err
	case <-ctx.Done():
		return 0, errProbeTimeout
	}
}

// isDeadFuse reports errors that mean the FUSE daemon behind a mount is
// gone (ENOTCONN after a crash, ECONNABORTED after an abort).
func isDeadFuse(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// mountTableWatch wakes a waiter as soon as the mount table changes, so
// that a wait for a mount sees it when it happens rather than at the next
// poll: rbd-fuse mounts about 55 ms after it starts, and the first lookup
// it answers then takes another 25 ms, so each millisecond between its
// mount and the look is paid on the stage. poll(2) on an open mountinfo
// reports POLLPRI once per change in the namespace since the open or the
// previous report. A file that is no mount table (tests' fakes) never
// reports it, and any poll error turns the wait into a sleep: the watch
// only shortens waits.
type mountTableWatch struct{ fd int }

// watchMountTable starts watching the mount table read from mountinfo.
// Changes from the call on wake the waiter; the caller checks the table
// itself once after the call. The file is opened with open(2), not
// os.Open: Go's runtime poller would register it with its epoll, whose
// wake-ups poll the file too and so take the change report meant for
// the waiter (seen as waits that slept their whole length).
func watchMountTable(mountinfo string) *mountTableWatch {
	fd, err := unix.Open(mountinfo, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &mountTableWatch{fd: -1}
	}
	return &mountTableWatch{fd: fd}
}

// wait returns when the mount table changed, or after d.
func (w *mountTableWatch) wait(d time.Duration) {
	deadline := time.Now().Add(d)
	if w.fd < 0 {
		time.Sleep(d)
		return
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLPRI}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		// Rounded up: a zero timeout would spin.
		_, err := unix.Poll(fds, int((left+time.Millisecond-1)/time.Millisecond))
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EINTR) {
			time.Sleep(time.Until(deadline))
			return
		}
	}
}

// Close ends the watch.
func (w *mountTableWatch) Close() {
	if w.fd >= 0 {
		_ = unix.Close(w.fd)
		w.fd = -1
	}
}
