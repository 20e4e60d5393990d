package mapper

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/klog/v2"
)

func TestMain(m *testing.M) {
	// Log verbosely so that tests asserting "the key is never logged" see
	// every log line the code can produce.
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "10")
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(&klogSink)
	os.Exit(m.Run())
}

// klogSink collects all klog output of the test binary.
var klogSink syncBuffer

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureKlog returns the klog output logged from now on (read it at the
// end of the test).
type klogCapture struct{ start int }

func captureKlog(t *testing.T) *klogCapture {
	t.Helper()
	klog.Flush()
	return &klogCapture{start: len(klogSink.String())}
}

func (c *klogCapture) String() string {
	klog.Flush()
	return klogSink.String()[c.start:]
}

// testKey is a well-formed cephx key used by fake-backed tests.
var testKey = makeKey([]byte("0123456789abcdef"))

// makeKey encodes secret the way Ceph encodes a cephx AES key.
func makeKey(secret []byte) string {
	raw := []byte{1, 0, 0x93, 0xef, 0x0b, 0x6b, 0x7a, 0xc2, 0x66, 0x1c, byte(len(secret)), 0}
	return base64.StdEncoding.EncodeToString(append(raw, secret...))
}

// fakeExec records commands and answers them with a handler.
type fakeExec struct {
	mu      sync.Mutex
	calls   []Command
	handler func(c Command) (stdout, stderr string, err error)
	// files records the content of files named after --keyring while the
	// command "runs", to check what the tool would have read.
	keyrings []string
}

func (f *fakeExec) Run(_ context.Context, c Command) ([]byte, []byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Command{Path: c.Path, Args: slices.Clone(c.Args), Env: slices.Clone(c.Env)})
	if i := slices.Index(c.Args, "--keyring"); i >= 0 && i+1 < len(c.Args) {
		b, err := os.ReadFile(c.Args[i+1])
		if err == nil {
			f.keyrings = append(f.keyrings, string(b))
		} else {
			f.keyrings = append(f.keyrings, "unreadable: "+err.Error())
		}
	}
	h := f.handler
	f.mu.Unlock()
	if h == nil {
		return nil, nil, nil
	}
	stdout, stderr, err := h(c)
	return []byte(stdout), []byte(stderr), err
}

func (f *fakeExec) Calls() []Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// assertNoSecretInCalls fails if key appears in any argument or env.
func assertNoSecretInCalls(t *testing.T, calls []Command, key string) {
	t.Helper()
	for _, c := range calls {
		all := append(append([]string{c.Path}, c.Args...), c.Env...)
		for _, a := range all {
			if strings.Contains(a, key) {
				t.Errorf("the key appears in command %q", c.String())
			}
		}
	}
}
