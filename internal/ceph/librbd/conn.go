// Package librbd implements ceph.Backend with go-ceph (librados and librbd).
// It must be built with the go-ceph release tag matching the installed Ceph
// libraries (-tags pacific for Ceph 16).
//
// Connections are pooled per (cluster, user, key) and closed when idle.
// Every call runs in its own goroutine so that the caller can return when its
// context ends even though a librados call cannot be interrupted; librados'
// own mon/osd op timeouts and the client mount timeout then bound how long
// that goroutine can live.
package librbd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Options tune the backend.
type Options struct {
	// OpTimeout bounds each librados/librbd operation (rados_mon_op_timeout,
	// rados_osd_op_timeout) and connection set-up (client_mount_timeout).
	OpTimeout time.Duration
	// IdleTimeout closes a connection unused for this long.
	IdleTimeout time.Duration
	// PartialGrace is how old the pieces of an unfinished create must be
	// before RemovePartialImage takes them for a crash's remains. Younger
	// ones may be a create still running: in another controller, or one
	// this process gave up waiting for while librados carried on, each of
	// its steps bounded by OpTimeout. Zero means twice OpTimeout.
	PartialGrace time.Duration
	// Observe, when set, is told of every operation (see observe.go).
	Observe func(op string, d time.Duration, err error)
}

// DefaultOptions are used for zero fields of Options.
var DefaultOptions = Options{OpTimeout: 30 * time.Second, IdleTimeout: 10 * time.Minute}

// Backend is the go-ceph ceph.Backend.
type Backend struct {
	opts  Options
	mu    sync.Mutex
	conns map[string]*conn
	stop  chan struct{}
	once  sync.Once
}

var _ ceph.Backend = (*Backend)(nil)

// New returns a Backend and starts its idle-connection reaper; Close stops it.
func New(opts Options) *Backend {
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOptions.OpTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultOptions.IdleTimeout
	}
	if opts.PartialGrace <= 0 {
		opts.PartialGrace = 2 * opts.OpTimeout
	}
	b := &Backend{opts: opts, conns: map[string]*conn{}, stop: make(chan struct{})}
	go b.reap()
	return b
}

// Close shuts every idle connection down and stops the reaper. Connections
// still in use are closed by their last user.
func (b *Backend) Close() {
	b.once.Do(func() { close(b.stop) })
	b.closeIdle(0)
}

// OpenConnections reports how many connections the pool holds.
func (b *Backend) OpenConnections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

type conn struct {
	key    string
	label  string // cluster and user, for errors and logs
	ready  chan struct{}
	err    error // set before ready closes
	rc     *rados.Conn
	mu     sync.Mutex
	ioctxs map[string]*rados.IOContext
	users  int
	last   time.Time
	closed bool
	// broken marks a connection the cluster blocklisted: it is out of the
	// pool and shut down by its last user.
	broken  bool
	mgrSeen time.Time // when the mgr was last seen active
	fsidVal string    // the cluster's fsid, once read
	checks  poolChecks
	// defaults are the pools' create settings, by pool (createDefaultsOf).
	defaults map[string]createDefaults
	// stranded counts calls whose caller gave up at its deadline while
	// librados still waits (monitor commands have no librados timeout,
	// see connect). Past maxStranded, new calls fail at once instead of
	// piling up goroutines behind an unreachable cluster.
	stranded int
}

// maxStranded bounds the calls left waiting on one connection.
const maxStranded = 16

func connKey(cl ceph.Cluster, cr ceph.Credentials) string {
	sum := sha256.Sum256([]byte(cr.Key))
	return cl.Key() + "|" + cr.User + "|" + hex.EncodeToString(sum[:8])
}

func clusterLabel(cl ceph.Cluster, cr ceph.Credentials) string {
	name := cl.ID
	if name == "" {
		name = strings.Join(cl.Monitors, ",")
	}
	return fmt.Sprintf("cluster %s as client.%s", name, cr.User)
}

// acquire returns a connected conn with its user count raised; release it.
func (b *Backend) acquire(ctx context.Context, cl ceph.Cluster, cr ceph.Credentials) (*conn, error) {
	key := connKey(cl, cr)
	b.mu.Lock()
	c, ok := b.conns[key]
	if !ok {
		c = &conn{key: key, label: clusterLabel(cl, cr), ready: make(chan struct{}), ioctxs: map[string]*rados.IOContext{}}
		b.conns[key] = c
		go b.connect(c, cl, cr)
	}
	c.users++
	b.mu.Unlock()

	select {
	case <-c.ready:
	case <-ctx.Done():
		b.release(c)
		return nil, &ceph.OpError{Op: "connect to", Target: c.label, Err: fmt.Errorf("%w: %v (monitors %s)", ceph.ErrTimeout, ctx.Err(), strings.Join(cl.Monitors, ","))}
	}
	if c.err != nil {
		b.release(c)
		return nil, c.err
	}
	return c, nil
}

func (b *Backend) release(c *conn) {
	b.mu.Lock()
	c.users--
	c.last = time.Now()
	failed := c.err != nil
	if failed && b.conns[c.key] == c {
		// A failed connection is never reused: the next call tries afresh.
		delete(b.conns, c.key)
	}
	closeNow := c.broken && c.users == 0
	b.mu.Unlock()
	if closeNow {
		c.shutdown()
	}
}

// discard takes a blocklisted connection out of the pool at once, so that
// the next call connects afresh (a new client instance, not blocklisted)
// instead of failing until the idle reaper closes it. Calls still running
// on it finish; the last one shuts it down (release).
func (b *Backend) discard(c *conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.broken {
		return
	}
	c.broken = true
	if b.conns[c.key] == c {
		delete(b.conns, c.key)
	}
	klog.InfoS("Ceph blocklisted this connection; dropped it from the pool, the next call reconnects", "target", c.label)
}

// blocklisted reports whether err says the cluster blocklisted the client:
// librados answers EBLOCKLISTED, which is ESHUTDOWN, from then on.
func blocklisted(err error) bool {
	return err != nil && syscall.Errno(errno(err)) == syscall.ESHUTDOWN
}

func (b *Backend) connect(c *conn, cl ceph.Cluster, cr ceph.Credentials) {
	defer close(c.ready)
	rc, err := rados.NewConnWithUser(cr.User)
	if err != nil {
		c.err = &ceph.OpError{Op: "create connection to", Target: c.label, Err: err}
		return
	}
	if err := b.configure(rc, cl, cr); err != nil {
		rc.Shutdown()
		c.err = &ceph.OpError{Op: "configure connection to", Target: c.label, Err: err}
		return
	}
	start := time.Now()
	if err := rc.Connect(); err != nil {
		rc.Shutdown()
		c.err = &ceph.OpError{Op: "connect to", Target: c.label, Err: classifyConnect(err, cr.User, cl.Monitors)}
		b.mu.Lock()
		if b.conns[c.key] == c {
			delete(b.conns, c.key)
		}
		b.mu.Unlock()
		return
	}
	klog.V(4).InfoS("Connected to Ceph", "target", c.label, "duration", time.Since(start))
	c.rc = rc
}

// configure sets every option in memory: no config file or keyring is read,
// the key never touches the disk or an argument list.
func (b *Backend) configure(rc *rados.Conn, cl ceph.Cluster, cr ceph.Credentials) error {
	timeout := strconv.Itoa(int(b.opts.OpTimeout.Seconds()))
	settings := [][2]string{
		{"mon_host", strings.Join(cl.Monitors, ",")},
		{"key", cr.Key},
		{"keyring", ""},
		{"client_mount_timeout", timeout},
		// Monitor commands are NOT timed out inside librados: on Ceph 16,
		// after a mon command hit rados_mon_op_timeout, the process aborts
		// ("free(): invalid pointer") once the monitor is back (make chaos,
		// monitor-down; cf. Ceph tracker 65985). The caller still returns
		// at its deadline (run); the goroutine ends when the monitor answers.
		{"rados_mon_op_timeout", "0"},
		{"rados_osd_op_timeout", timeout},
		// Several connections live in one process: a shared admin socket
		// path would collide, and the driver does not need one.
		{"admin_socket", ""},
		// Pools are validated once per connection (withPoolCheck).
		{"rbd_validate_pool", "false"},
		{"log_to_stderr", "false"},
		{"err_to_stderr", "false"},
		{"log_file", ""},
	}
	for _, kv := range settings {
		if err := rc.SetConfigOption(kv[0], kv[1]); err != nil {
			return fmt.Errorf("set option %s: %w", kv[0], err)
		}
	}
	return nil
}

// ioctx returns the cached I/O context of pool (in the cluster's namespace).
func (c *conn) ioctx(pool, ns string) (*rados.IOContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if io, ok := c.ioctxs[pool]; ok {
		return io, nil
	}
	io, err := c.rc.OpenIOContext(pool)
	if err != nil {
		return nil, fmt.Errorf("open pool %s: %w", pool, err)
	}
	io.SetNamespace(ns)
	c.ioctxs[pool] = io
	return io, nil
}

// fsid returns the cluster's fsid, read once per connection.
func (c *conn) fsid() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fsidVal != "" {
		return c.fsidVal, nil
	}
	id, err := c.rc.GetFSID()
	if err != nil {
		return "", err
	}
	c.fsidVal = id
	return id, nil
}

func (c *conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.rc == nil {
		return
	}
	for _, io := range c.ioctxs {
		io.Destroy()
	}
	c.ioctxs = nil
	c.rc.Shutdown()
	c.closed = true
}

func (b *Backend) reap() {
	t := time.NewTicker(b.opts.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.closeIdle(b.opts.IdleTimeout)
		}
	}
}

func (b *Backend) closeIdle(idle time.Duration) {
	var victims []*conn
	b.mu.Lock()
	for k, c := range b.conns {
		select {
		case <-c.ready:
		default:
			continue // still connecting
		}
		if c.users == 0 && time.Since(c.last) >= idle {
			victims = append(victims, c)
			delete(b.conns, k)
		}
	}
	b.mu.Unlock()
	for _, c := range victims {
		klog.V(4).InfoS("Closing idle Ceph connection", "target", c.label)
		c.shutdown()
	}
}

// run executes fn on a pooled connection and returns when fn does or when
// ctx ends, whichever is first.
func (b *Backend) run(ctx context.Context, op, target string, cl ceph.Cluster, cr ceph.Credentials, fn func(c *conn) error) (err error) {
	defer b.observe(op, time.Now(), &err)
	c, err := b.acquire(ctx, cl, cr)
	if err != nil {
		return err
	}
	if n := c.strandedCalls(); n >= maxStranded {
		b.release(c)
		return &ceph.OpError{Op: op, Target: target, Err: fmt.Errorf("%w: %d earlier calls to %s are still waiting for it to answer", ceph.ErrUnavailable, n, c.label)}
	}
	// state decides, once, whether the call finished first (the caller
	// gets its result) or the caller's deadline did (the call is stranded
	// until librados returns).
	const running, finished, abandoned = 0, 1, 2
	var state atomic.Int32
	done := make(chan error, 1)
	go func() {
		defer b.release(c)
		err := fn(c)
		if blocklisted(err) {
			b.discard(c)
		}
		done <- err
		if !state.CompareAndSwap(running, finished) {
			c.addStranded(-1)
		}
	}()
	select {
	case err := <-done:
		return opResult(op, target, err)
	case <-ctx.Done():
		if !state.CompareAndSwap(running, abandoned) {
			return opResult(op, target, <-done)
		}
		c.addStranded(1)
		return &ceph.OpError{Op: op, Target: target, Err: fmt.Errorf("%w: %v", ceph.ErrTimeout, ctx.Err())}
	}
}

func opResult(op, target string, err error) error {
	if err != nil {
		return &ceph.OpError{Op: op, Target: target, Err: classify(err)}
	}
	return nil
}

func (c *conn) strandedCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stranded
}

func (c *conn) addStranded(n int) {
	c.mu.Lock()
	c.stranded += n
	c.mu.Unlock()
}
