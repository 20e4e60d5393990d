package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func ok(context.Context) error   { return nil }
func down(context.Context) error { return errors.New("connection refused") }

func TestReadinessIsReadyWhenAnyConfiguredClusterIsReachable(t *testing.T) {
	cases := []struct {
		name      string
		checks    map[string]Check
		wantReady bool
		wantMsg   string
	}{
		{"no cluster configured", nil, true, "nothing to check"},
		{"the only cluster reachable", map[string]Check{"a": ok}, true, "reachable: a"},
		{"one of two reachable", map[string]Check{"a": down, "b": ok}, true, "unreachable: a: connection refused"},
		{"none reachable", map[string]Check{"a": down, "b": down}, false, "no configured cluster is reachable: a: connection refused; b: connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReadiness(c.checks, time.Hour, time.Second, nil)
			r.Start()
			defer r.Stop()
			waitRounds(t, r, 1)
			ready, msg := r.Ready()
			if ready != c.wantReady || !strings.Contains(msg, c.wantMsg) {
				t.Fatalf("Ready() = %v, %q; want %v and a message with %q", ready, msg, c.wantReady, c.wantMsg)
			}
		})
	}
}

func TestReadinessAnswersAtOnceWhileACheckHangs(t *testing.T) {
	release := make(chan struct{})
	hang := func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m := New()
	r := NewReadiness(map[string]Check{"slow": hang}, time.Hour, time.Minute, m)
	r.Start()
	start := time.Now()
	ready, msg := r.Ready()
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Ready took %v while the check hung", took)
	}
	if ready || !strings.Contains(msg, "first cluster check") {
		t.Fatalf("before the first round: Ready() = %v, %q", ready, msg)
	}
	close(release)
	waitRounds(t, r, 1)
	if ready, msg := r.Ready(); !ready {
		t.Fatalf("after the check passed: not ready: %s", msg)
	}
	r.Stop()
	if !strings.Contains(scrape(t, m), `rbdcsi_cluster_reachable{cluster="slow"} 1`) {
		t.Error("cluster_reachable gauge not set")
	}
}

func TestReadinessRechecksEveryInterval(t *testing.T) {
	up := make(chan bool, 1)
	up <- false
	state := false
	flip := func(context.Context) error {
		select {
		case state = <-up:
		default:
		}
		if !state {
			return errors.New("down")
		}
		return nil
	}
	r := NewReadiness(map[string]Check{"c": flip}, 10*time.Millisecond, time.Second, nil)
	r.Start()
	defer r.Stop()
	waitRounds(t, r, 1)
	if ready, _ := r.Ready(); ready {
		t.Fatal("ready while the cluster is down")
	}
	up <- true
	deadline := time.Now().Add(5 * time.Second)
	for ready, _ := r.Ready(); !ready; ready, _ = r.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("still not ready 5 s after the cluster came back")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitRounds(t *testing.T, r *Readiness, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.RLock()
		done := r.rounds >= n
		r.mu.RUnlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d check rounds in 5 s", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestMonitorsReachableDialsTheMonitors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	cases := []struct {
		name     string
		monitors []string
		wantOK   bool
	}{
		{"listening monitor", []string{lis.Addr().String()}, true},
		{"v1 prefix", []string{"v1:" + lis.Addr().String()}, true},
		{"second monitor listens", []string{deadAddr, "v2:" + lis.Addr().String()}, true},
		{"nothing listens", []string{deadAddr}, false},
		{"no monitors", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := MonitorsReachable(c.monitors)(ctx)
			if (err == nil) != c.wantOK {
				t.Fatalf("err = %v, want reachable=%v", err, c.wantOK)
			}
		})
	}
}

func TestDialAddrsAddsTheDefaultPortsOnlyWhenNoneIsGiven(t *testing.T) {
	cases := map[string]string{
		"10.0.0.1:6789":        "10.0.0.1:6789",
		"v2:10.0.0.1:3300":     "10.0.0.1:3300",
		"mon.example":          "mon.example:6789 mon.example:3300",
		"[fd00::1]:3300":       "[fd00::1]:3300",
		"[fd00::1]":            "[fd00::1]:6789 [fd00::1]:3300",
		"v1:mon.example:16789": "mon.example:16789",
	}
	for in, want := range cases {
		if got := strings.Join(dialAddrs(in), " "); got != want {
			t.Errorf("dialAddrs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandlerServesHealthAndReadinessCodes(t *testing.T) {
	m := New()
	down := NewReadiness(map[string]Check{"a": down}, time.Hour, time.Second, nil)
	down.Start()
	defer down.Stop()
	waitRounds(t, down, 1)
	cases := []struct {
		name     string
		ready    *Readiness
		path     string
		wantCode int
		wantBody string
	}{
		{"healthz always answers", down, "/healthz", 200, "ok"},
		{"readyz with every cluster down", down, "/readyz", 503, "no configured cluster is reachable"},
		{"readyz without checks", nil, "/readyz", 200, "no readiness checks"},
		{"metrics in text format", nil, "/metrics", 200, "# TYPE rbdcsi_rpc_requests_total counter"},
		{"unknown path", nil, "/secrets", 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m.ObserveRPC("/csi.v1.Identity/Probe", "OK", time.Millisecond)
			rec := get(t, Handler(m, c.ready), c.path)
			if rec.Code != c.wantCode || !strings.Contains(rec.Body.String(), c.wantBody) {
				t.Fatalf("GET %s = %d %q, want %d with %q", c.path, rec.Code, rec.Body.String(), c.wantCode, c.wantBody)
			}
		})
	}
}

func TestServeListensAndCloses(t *testing.T) {
	s, err := Serve("127.0.0.1:0", New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	s.Close()
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Fatal("still serving after Close")
	}
	if _, err := Serve("256.0.0.1:bad", New(), nil); err == nil {
		t.Fatal("a bad address was accepted")
	}
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}
