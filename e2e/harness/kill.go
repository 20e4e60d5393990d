package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// WithRandomKill wraps a call so that, with even odds, the driver is
// SIGKILLed at a random moment of the call's first window: inside the RPC,
// between two Ceph operations, or before the reply is sent. kills counts the
// SIGKILLs sent.
func (d *Driver) WithRandomKill(window time.Duration, kills *atomic.Int32, fn func(context.Context) error) func(context.Context) error {
	return func(c context.Context) error {
		if coin, _ := rand.Int(rand.Reader, big.NewInt(2)); coin.Int64() == 1 {
			delay, _ := rand.Int(rand.Reader, big.NewInt(int64(window)))
			timer := time.AfterFunc(time.Duration(delay.Int64()), func() {
				if d.Alive() {
					kills.Add(1)
					d.Kill()
				}
			})
			defer timer.Stop()
		}
		return fn(c)
	}
}

// LogHolds returns those of needles that appear in the driver's log, for
// "secrets never reach the log" checks (empty needles are ignored).
func (d *Driver) LogHolds(needles ...string) ([]string, error) {
	data, err := os.ReadFile(d.Log)
	if err != nil {
		return nil, err
	}
	var found []string
	for _, n := range needles {
		if n != "" && bytes.Contains(data, []byte(n)) {
			found = append(found, n)
		}
	}
	return found, nil
}

// KillMapperDaemons SIGKILLs every rbd-nbd and rbd-fuse process naming
// image and returns their /proc paths. With Driver.Kill it is what a
// Kubernetes container restart does to the node plugin: every process of
// the container dies, the mapping daemons it started among them (they
// daemonise out of the plugin's process group, so a group kill would miss
// them; a test owns its images' daemons).
func KillMapperDaemons(image string) []string {
	var killed []string
	for _, p := range mapperProcs("rbd-nbd", "rbd-fuse") {
		if !slices.ContainsFunc(p.args, func(a string) bool { return strings.HasSuffix(a, "/"+image) }) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(p.pid))
		if err == nil && syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, p.pid)
		}
	}
	for _, p := range killed { // gone once /proc no longer lists it (reaped by init)
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(p); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return killed
}
