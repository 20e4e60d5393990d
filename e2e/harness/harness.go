// Package harness runs the real rbd-csi binary as a child process for
// end-to-end tests that must kill and restart it, and gives them a CSI
// client on its socket.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds bin/rbd-csi once per test binary (or uses $RBD_CSI_BIN).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("RBD_CSI_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rbd-csi-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "rbd-csi")
		tags := os.Getenv("GO_TAGS")
		if tags == "" {
			tags = "pacific"
		}
		cmd := exec.Command("go", "build", "-tags", tags, "-o", binPath, "github.com/rbd-csi/rbd-csi/cmd/rbd-csi")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build rbd-csi: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Driver is one rbd-csi child process; Restart replaces it with a fresh one
// on the same socket.
type Driver struct {
	t    testing.TB
	Args []string
	Env  []string
	Sock string
	Log  string
	// Redact lists strings (keys) that a failed test's log dump and kept
	// log must not carry; Start puts the cluster's admin key there.
	Redact []string
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	conn   *grpc.ClientConn
}

// Start launches the driver with args (the endpoint is added) and waits
// until it serves.
func Start(t testing.TB, dir string, args []string, env ...string) *Driver {
	t.Helper()
	d := &Driver{t: t, Args: args, Env: env, Sock: filepath.Join(dir, "csi.sock"), Log: filepath.Join(dir, "driver.log"), Redact: []string{os.Getenv("CEPH_ADMIN_KEY")}}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	t.Cleanup(func() { d.dumpLogOnFailure() })
	// Tests restart the driver often: reconnect within milliseconds rather
	// than after gRPC's default back-off of up to two minutes.
	conn, err := grpc.NewClient("unix://"+d.Sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	d.conn = conn
	return d
}

func (d *Driver) start() error {
	// A socket left by a killed process must not pass for the new one.
	if err := os.Remove(d.Sock); err != nil && !os.IsNotExist(err) {
		return err
	}
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(Binary(d.t), append([]string{"--endpoint", "unix://" + d.Sock}, d.Args...)...)
	cmd.Env = append(os.Environ(), d.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start rbd-csi: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	if err := waitForSocket(d.Sock, done, 2*time.Minute); err != nil {
		out, _ := os.ReadFile(d.Log)
		return fmt.Errorf("%w; log:\n%s", err, out)
	}
	return nil
}

func waitForSocket(sock string, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("rbd-csi exited during start-up")
		default:
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rbd-csi did not create %s within %v", sock, timeout)
}

// Controller is a client of the Controller service.
func (d *Driver) Controller() csi.ControllerClient { return csi.NewControllerClient(d.conn) }

// Node is a client of the Node service.
func (d *Driver) Node() csi.NodeClient { return csi.NewNodeClient(d.conn) }

// Identity is a client of the Identity service.
func (d *Driver) Identity() csi.IdentityClient { return csi.NewIdentityClient(d.conn) }

// Alive reports whether the process is running.
func (d *Driver) Alive() bool {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (d *Driver) Kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts a fresh process (killing the current one if it still
// runs), with env replacing the start-up environment additions.
func (d *Driver) Restart(env ...string) {
	d.t.Helper()
	if err := d.TryRestart(env...); err != nil {
		d.t.Fatal(err)
	}
}

// TryRestart is Restart returning the error, for callers that race a killer.
func (d *Driver) TryRestart(env ...string) error {
	if d.Alive() {
		d.Kill()
	}
	d.Env = env
	return d.start()
}

// WaitExit waits up to timeout for the process to end by itself.
func (d *Driver) WaitExit(timeout time.Duration) bool {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Stop terminates the process (SIGTERM, then SIGKILL after 10 s).
func (d *Driver) Stop() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.Kill()
		}
	}
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}

// Retry calls fn until it succeeds, restarting the driver whenever it has
// died, until ctx ends.
func (d *Driver) Retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("gave up: %w (last error %v)", ctx.Err(), err)
		}
		if !d.Alive() {
			// A failed start (the killer may strike again) is retried.
			_ = d.TryRestart(d.Env...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dumpLogOnFailure prints the end of the driver log into the test output,
// where CI keeps it, when the test failed.
func (d *Driver) dumpLogOnFailure() {
	if !d.t.Failed() {
		return
	}
	data, err := os.ReadFile(d.Log)
	if err != nil {
		return
	}
	// The failure may be a key that reached the log: it must not go on
	// into CI's output or a kept file.
	for _, r := range d.Redact {
		if r != "" {
			data = bytes.ReplaceAll(data, []byte(r), []byte("<redacted key>"))
		}
	}
	d.keepLog(data)
	const tail = 6000
	if len(data) > tail {
		data = data[len(data)-tail:]
	}
	d.t.Logf("--- end of %s ---\n%s", d.Log, data)
}

// keepLog copies a failed test's whole driver log into $RBDCSI_FAILED_LOGS
// (when set): the test's own directory is removed with it, and the tail in
// the test output rarely reaches back to the call that went wrong.
func (d *Driver) keepLog(data []byte) {
	dir := os.Getenv("RBDCSI_FAILED_LOGS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.t.Logf("keeping the driver log: %v", err)
		return
	}
	// A test may run several drivers: each gets its own file.
	f, err := os.CreateTemp(dir, strings.ReplaceAll(d.t.Name(), "/", "_")+".*.driver.log")
	if err != nil {
		d.t.Logf("keeping the driver log: %v", err)
		return
	}
	name := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.t.Logf("keeping the driver log: %v", err)
		return
	}
	d.t.Logf("whole driver log kept in %s", name)
}
