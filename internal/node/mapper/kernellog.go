package mapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KernelLog gives access to recent kernel messages, which is where libceph
// and rbd explain why a map failed ("feature set mismatch", "image uses
// unsupported features", auth errors).
type KernelLog interface {
	// Since returns the kernel log lines logged at or after t (best
	// effort; implementations may include a little earlier), oldest first.
	// It must return within ctx's deadline.
	Since(ctx context.Context, t time.Time) ([]string, error)
}

// KmsgLog reads /dev/kmsg without blocking. It needs CAP_SYSLOG (or
// dmesg_restrict=0), as the node plugin's privileged container has.
type KmsgLog struct {
	// Path defaults to /dev/kmsg.
	Path string
}

const (
	kmsgMaxRecords = 200000 // bounds a read of a huge ring buffer
	kmsgKeepLines  = 200
	// kmsgSlack widens the time window: /proc/uptime and printk
	// timestamps come from slightly different clocks.
	kmsgSlack = 2 * time.Second
)

// Since implements KernelLog.
func (l KmsgLog) Since(ctx context.Context, t time.Time) ([]string, error) {
	path := l.Path
	if path == "" {
		path = "/dev/kmsg"
	}
	cutoff, err := bootRelative(t)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK: reading past the newest record returns EAGAIN instead of
	// waiting for the next message.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer syscall.Close(fd)
	return readKmsg(ctx, fd, cutoff)
}

func readKmsg(ctx context.Context, fd int, cutoff time.Duration) ([]string, error) {
	buf := make([]byte, 16384) // a record is at most ~8 KiB
	var lines []string
	for i := 0; i < kmsgMaxRecords; i++ {
		if i%1000 == 0 && ctx.Err() != nil {
			return lines, ctx.Err()
		}
		n, err := syscall.Read(fd, buf)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return lines, nil
		case errors.Is(err, syscall.EPIPE):
			continue // record overwritten while reading; go on with the next
		case err != nil:
			return lines, fmt.Errorf("reading kernel log: %w", err)
		case n == 0:
			return lines, nil
		}
		ts, msg, ok := parseKmsgRecord(string(buf[:n]))
		if ok && ts >= cutoff {
			lines = append(lines, msg)
			if len(lines) > kmsgKeepLines {
				lines = lines[1:]
			}
		}
	}
	return lines, nil
}

// parseKmsgRecord parses "prio,seq,usec,flags[,...];message\n[ KEY=VAL\n]".
func parseKmsgRecord(rec string) (time.Duration, string, bool) {
	head, body, ok := strings.Cut(rec, ";")
	if !ok {
		return 0, "", false
	}
	fields := strings.Split(head, ",")
	if len(fields) < 3 {
		return 0, "", false
	}
	usec, err := strconv.ParseInt(fields[2], 10, 64)
	if err != nil {
		return 0, "", false
	}
	msg, _, _ := strings.Cut(body, "\n")
	return time.Duration(usec) * time.Microsecond, msg, true
}

// bootRelative converts a wall-clock time into time since boot, the clock
// of kernel log timestamps.
func bootRelative(t time.Time) (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/uptime: %w", err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	secs, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/uptime %q: %w", first, err)
	}
	uptime := time.Duration(secs * float64(time.Second))
	return uptime - time.Since(t) - kmsgSlack, nil
}
