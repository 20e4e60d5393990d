package mapper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Command is one run of an external program.
type Command struct {
	// Path is the program (looked up in PATH when it has no slash).
	Path string
	// Args are the arguments without the program name. They never contain
	// secrets; tests assert that.
	Args []string
	// Env is added to the plugin's environment, from which any CEPH_*
	// variables are removed first so that the command only sees what the
	// mapper chose.
	Env []string
	// Stdin is the command's standard input: the one place a secret (a
	// LUKS passphrase) may go. String never shows it.
	Stdin []byte
}

// String renders the command for logs and errors (it holds no secrets).
func (c Command) String() string {
	return strings.TrimSpace(c.Path + " " + strings.Join(c.Args, " "))
}

// Executor runs commands to completion under ctx. Implementations must kill
// the command when ctx ends.
type Executor interface {
	Run(ctx context.Context, cmd Command) (stdout, stderr []byte, err error)
}

// OSExecutor runs commands with os/exec.
type OSExecutor struct{}

// waitDelay bounds how long Run waits for a command's output pipes after it
// exited: rbd-nbd forks a daemon that could keep them open.
const waitDelay = 3 * time.Second

// Run implements Executor.
func (OSExecutor) Run(ctx context.Context, c Command) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = commandEnv(c.Env)
	cmd.WaitDelay = waitDelay
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	// Where a stage's time goes is the first question when a node is slow;
	// the command line carries no secret (see Command.Args).
	klog.V(4).InfoS("ran command", "cmd", c.String(), "duration", time.Since(start), "err", err)
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command succeeded; only a forked child kept a pipe open.
		err = nil
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return stdout.Bytes(), stderr.Bytes(), err
}

// commandEnv is the plugin's environment without CEPH_* variables (which
// could point a tool at another cluster or keyring) plus extra.
func commandEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CEPH_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// RunTool runs a command under ctx with ex; a failure is an error quoting
// the command line and the tail of its stderr (never its stdin).
func RunTool(ctx context.Context, ex Executor, c Command) (string, error) {
	return runTool(ctx, ex, c)
}

// runTool runs a command and turns a failure into an error quoting the
// command and the tail of its stderr.
func runTool(ctx context.Context, ex Executor, c Command) (string, error) {
	stdout, stderr, err := ex.Run(ctx, c)
	if err != nil {
		c.Stdin = nil // a passphrase or key must not live on in the error
		return string(stdout), &toolError{cmd: c, err: err, stderr: tail(string(stderr), 800)}
	}
	return string(stdout), nil
}

// toolError is a failed command. Its text quotes the command line (never
// secret) and the end of stderr.
type toolError struct {
	cmd    Command
	err    error
	stderr string
}

func (e *toolError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("%s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.stderr)
}

func (e *toolError) Unwrap() error { return e.err }

// tail returns at most n bytes from the end of s, trimmed, on one line.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}
