package metrics

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// Check tells whether one cluster is reachable: nil when it is.
type Check func(ctx context.Context) error

// Readiness checks the configured clusters in the background and answers
// from the last results, so that asking never waits for a cluster: the
// answer is at most one interval old, and a hung cluster makes only the
// background round slow.
type Readiness struct {
	checks   map[string]Check
	interval time.Duration
	timeout  time.Duration
	metrics  *Metrics // optional: also exported as rbdcsi_cluster_reachable

	mu      sync.RWMutex
	results map[string]error
	rounds  int
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// NewReadiness prepares checks (by cluster ID), run every interval, each
// bounded by timeout. m may be nil.
func NewReadiness(checks map[string]Check, interval, timeout time.Duration, m *Metrics) *Readiness {
	return &Readiness{checks: checks, interval: interval, timeout: timeout, metrics: m,
		results: map[string]error{}, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start runs a first round at once and then one per interval until Stop.
func (r *Readiness) Start() {
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			r.round()
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the background checks and waits for the current round.
func (r *Readiness) Stop() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// round runs every check in parallel and records the results together.
func (r *Readiness) round() {
	results := make(map[string]error, len(r.checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, check := range r.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			err := check(ctx)
			mu.Lock()
			results[id] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.mu.Lock()
	r.results = results
	r.rounds++
	r.mu.Unlock()
	if r.metrics != nil {
		for id, err := range results {
			r.metrics.setClusterReachable(id, err == nil)
		}
	}
}

// Ready reports whether at least one configured cluster was reachable at
// the last check, with a message naming what failed. With no cluster
// configured (volumes name their monitors) there is nothing to wait for.
// It never blocks on a check.
func (r *Readiness) Ready() (bool, string) {
	if len(r.checks) == 0 {
		return true, "no cluster configured: nothing to check"
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.rounds == 0 {
		return false, "first cluster check still running"
	}
	var ok, failed []string
	for id, err := range r.results {
		if err == nil {
			ok = append(ok, id)
		} else {
			failed = append(failed, fmt.Sprintf("%s: %v", id, err))
		}
	}
	sort.Strings(ok)
	sort.Strings(failed)
	if len(ok) == 0 {
		return false, "no configured cluster is reachable: " + strings.Join(failed, "; ")
	}
	msg := "reachable: " + strings.Join(ok, ", ")
	if len(failed) > 0 {
		msg += "; unreachable: " + strings.Join(failed, "; ")
	}
	return true, msg
}

// MonitorsReachable is a Check that passes when any of the monitors accepts
// a TCP connection. It needs no credentials (the driver holds none of its
// own: keys come with each request), so it tells "the network path to the
// cluster is open", which is what a readiness gate can act on; monitor
// quorum and authentication show in the RPC errors and Ceph error counters.
func MonitorsReachable(monitors []string) Check {
	return func(ctx context.Context) error {
		var last error
		var d net.Dialer
		for _, m := range monitors {
			for _, addr := range dialAddrs(m) {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.Close()
					return nil
				}
				last = err
				if ctx.Err() != nil {
					return fmt.Errorf("no monitor answered in time: %w", last)
				}
			}
		}
		if last == nil {
			return fmt.Errorf("no monitor address")
		}
		return fmt.Errorf("no monitor accepts connections (last: %w)", last)
	}
}

// dialAddrs turns a monitor entry of the cluster config ("v1:host:port",
// "host:port", "host", "[v6]:port") into host:port addresses; without a
// port both messenger ports are tried, as librados does.
func dialAddrs(m string) []string {
	for _, p := range []string{"v1:", "v2:"} {
		m = strings.TrimPrefix(m, p)
	}
	if host, port, err := net.SplitHostPort(m); err == nil {
		return []string{net.JoinHostPort(host, port)}
	}
	host := strings.TrimSuffix(strings.TrimPrefix(m, "["), "]")
	return []string{net.JoinHostPort(host, "6789"), net.JoinHostPort(host, "3300")}
}
