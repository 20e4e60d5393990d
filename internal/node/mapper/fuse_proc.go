package mapper

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procAlive reports whether pid runs (exists and is not a zombie).
func procAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": comm may contain spaces and parentheses, so the
	// state is the first field after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// procArgs returns the command line of pid.
func procArgs(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// isRBDFuseFor reports whether pid is an rbd-fuse serving mountpoint mnt,
// so that a recycled pid from a stale pid file is never signalled.
func isRBDFuseFor(pid int, mnt string) bool {
	args := procArgs(pid)
	if len(args) < 2 || !strings.HasPrefix(filepath.Base(args[0]), "rbd-fuse") {
		return false
	}
	return args[len(args)-1] == mnt
}

func readPidFile(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, true
}

// Polls of an rbd-fuse starting or stopping begin at pollMin and double up
// to pollMax: it mounts in about 40 ms and exits in a few on a quiet node,
// which a fixed 25 ms poll rounded up by 10 ms on average (measured by make
// bench), while one that waits for monitors is not polled hundreds of times.
const (
	pollMin = 2 * time.Millisecond
	pollMax = 25 * time.Millisecond
)

// waitGone polls until pid has exited or ctx ends.
func waitGone(ctx context.Context, pid int) bool {
	for poll := pollMin; procAlive(pid); poll = min(2*poll, pollMax) {
		select {
		case <-ctx.Done():
			return !procAlive(pid)
		case <-time.After(poll):
		}
	}
	return true
}

// processGraceTime bounds how long a stopping rbd-fuse gets per signal.
const processGraceTime = 5 * time.Second

// stopRBDFuse makes the rbd-fuse serving mnt exit: it normally exits by
// itself once its mount is gone; otherwise SIGTERM, then SIGKILL.
func stopRBDFuse(ctx context.Context, pid int, mnt string) error {
	if pid == 0 || !procAlive(pid) || !isRBDFuseFor(pid, mnt) {
		return nil
	}
	for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
		if sig != 0 {
			_ = syscall.Kill(pid, sig)
		}
		wctx, cancel := context.WithTimeout(ctx, processGraceTime)
		gone := waitGone(wctx, pid)
		cancel()
		if gone {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("rbd-fuse (pid %d) serving %s did not exit", pid, mnt)
}
