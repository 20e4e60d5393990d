package chaos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

const (
	outage       = 30 * time.Second
	callDeadline = 8 * time.Second
	// slack is what a call may take past its deadline: the time to carry
	// the error back over the socket, on a loaded 2-core machine.
	slack = time.Second
)

// outcome tallies the calls of scenario 2.
type outcome struct {
	mu           sync.Mutex
	byCode       map[codes.Code]int
	overDeadline int
	longest      time.Duration
	names        []string // create names tried during the outage
	created      []string // volume IDs created (during or after the outage)
}

func (o *outcome) record(code codes.Code, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byCode[code]++
	o.longest = max(o.longest, took)
	if took > callDeadline+slack {
		o.overDeadline++
	}
}

// Scenario 2: the Ceph monitor is stopped for 30 s while calls are in
// flight and keep coming. Every call returns within its deadline, with
// success (an operation that needs only the OSDs can still complete over an
// open session), Unavailable or DeadlineExceeded; /readyz turns 503; no lock
// stays held (every name tried during the outage can be created afterwards
// without Aborted); calls succeed again within seconds of the monitor's
// return, and /readyz turns 200, all without restarting the driver.
func TestChaosMonitorDownCallsStayBoundedAndRecover(t *testing.T) {
	requireChaos(t)
	p := harness.NewPool(t, clusterID)
	monScript := filepath.Join("..", "ceph", "mon.sh")
	if p.Env.Dir == "" {
		t.Skip("CEPH_DIR is unset: the monitor can only be stopped on a cluster started by e2e/ceph/up.sh")
	}
	metricsAddr := freeAddr(t)
	d := harness.Start(t, p.Dir, controllerArgs(p, "chaos-mon", "--ceph-timeout=5s", "--metrics-address="+metricsAddr))
	fig := newFigure("monitor-down")
	defer fig.print(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := d.Controller().CreateVolume(ctx, p.CreateReq("pvc-warm")); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	victims := createVictims(ctx, t, p, d, 8)
	res := &outcome{byCode: map[codes.Code]int{}}
	t.Cleanup(func() { cleanUpMonScenario(t, p, d, res, victims) })

	stopCalls := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int32
	for w := range 4 {
		wg.Go(func() { callUntil(stopCalls, d, p, res, &seq, victims, w) })
	}
	time.Sleep(2 * time.Second) // calls are in flight when the monitor goes
	runMon(t, p, monScript, "stop")
	t.Cleanup(func() { runMon(t, p, monScript, "start") })
	readyDuring := watchReadyz(metricsAddr, outage)
	runMon(t, p, monScript, "start")
	back := time.Now()
	close(stopCalls)
	wg.Wait()

	fig.set("calls", sum(res.byCode))
	fig.set("ok", res.byCode[codes.OK])
	fig.set("unavailable", res.byCode[codes.Unavailable])
	fig.set("deadline_exceeded", res.byCode[codes.DeadlineExceeded])
	fig.zero(t, "other_codes", sum(res.byCode)-res.byCode[codes.OK]-res.byCode[codes.Unavailable]-res.byCode[codes.DeadlineExceeded], res.byCode)
	fig.zero(t, "over_deadline", res.overDeadline)
	// The client's own deadline cancels a call, so the figure above cannot
	// see a handler that runs on; the driver's log has each RPC's duration
	// as the server measured it.
	over, logged := serverOverDeadline(t, d, callDeadline+slack)
	fig.set("rpcs_logged", logged)
	fig.zero(t, "server_over_deadline", over)
	fig.set("longest_call_s", fmt.Sprintf("%.1f", res.longest.Seconds()))
	fig.set("readyz_during_outage", readyDuring)
	if res.byCode[codes.Unavailable]+res.byCode[codes.DeadlineExceeded] == 0 {
		t.Error("no call failed during the outage: the scenario proved nothing")
	}
	if readyDuring != http.StatusServiceUnavailable {
		t.Errorf("/readyz answered %d during the outage, want 503", readyDuring)
	}

	recovered := waitRecovered(ctx, t, d, p, res, back)
	fig.set("recovered_s", fmt.Sprintf("%.1f", recovered.Seconds()))
	if recovered > 30*time.Second {
		t.Errorf("calls succeeded again only %v after the monitor returned", recovered)
	}
	fig.set("readyz_after_s", fmt.Sprintf("%.1f", waitReadyz(t, d, metricsAddr, back).Seconds()))
	fig.zero(t, "locks_held", retryOutageNames(ctx, t, d, p, res))
	died := 0
	if !d.Alive() {
		died = 1
	}
	fig.zero(t, "driver_died", died)
	fig.secretsInLog(t, []*harness.Driver{d}, p.Env.Admin.Key)
}

// callUntil issues calls back to back until stop: creates of fresh names,
// deletes of the victims, and capacity queries (a monitor command).
func callUntil(stop <-chan struct{}, d *harness.Driver, p *harness.Pool, res *outcome, seq *atomic.Int32, victims []string, worker int) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := int(seq.Add(1))
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		start := time.Now()
		var err error
		switch n % 3 {
		case 0:
			name := fmt.Sprintf("pvc-outage-%d", n)
			res.mu.Lock()
			res.names = append(res.names, name)
			res.mu.Unlock()
			var resp *csi.CreateVolumeResponse
			if resp, err = d.Controller().CreateVolume(ctx, p.CreateReq(name)); err == nil {
				res.mu.Lock()
				res.created = append(res.created, resp.Volume.VolumeId)
				res.mu.Unlock()
			}
		case 1:
			_, err = d.Controller().DeleteVolume(ctx, p.DeleteReq(victims[(n+worker)%len(victims)]))
		default:
			_, err = d.Controller().GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": clusterID, "pool": p.Env.Pool}})
		}
		res.record(status.Code(err), time.Since(start))
		cancel()
	}
}

// waitRecovered retries a create and a capacity query (which needs the
// monitor) until both succeed, and returns how long after the monitor's
// return that was.
func waitRecovered(ctx context.Context, t *testing.T, d *harness.Driver, p *harness.Pool, res *outcome, back time.Time) time.Duration {
	t.Helper()
	for ctx.Err() == nil {
		requireAlive(t, d)
		cctx, cancel := context.WithTimeout(ctx, callDeadline)
		resp, errCreate := d.Controller().CreateVolume(cctx, p.CreateReq("pvc-after"))
		_, errCap := d.Controller().GetCapacity(cctx, &csi.GetCapacityRequest{Parameters: map[string]string{"clusterID": clusterID, "pool": p.Env.Pool}})
		cancel()
		if errCreate == nil && errCap == nil {
			res.created = append(res.created, resp.Volume.VolumeId)
			return time.Since(back)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("calls never succeeded again after the monitor returned")
	return 0
}

// retryOutageNames creates every name tried during the outage again: an
// Aborted answer means a lock stayed held. It returns how many were.
func retryOutageNames(ctx context.Context, t *testing.T, d *harness.Driver, p *harness.Pool, res *outcome) int {
	t.Helper()
	held := 0
	for _, name := range res.names {
		requireAlive(t, d)
		resp, err := d.Controller().CreateVolume(ctx, p.CreateReq(name))
		switch {
		case status.Code(err) == codes.Aborted:
			held++
		case err != nil:
			t.Errorf("create %s after the outage: %v", name, err)
		default:
			res.created = append(res.created, resp.Volume.VolumeId)
		}
	}
	return held
}

// watchReadyz polls /readyz for the length of the outage and returns the
// last status seen (0 when it never answered).
func watchReadyz(addr string, during time.Duration) int {
	last := 0
	for end := time.Now().Add(during); time.Now().Before(end); time.Sleep(time.Second) {
		if code := readyz(addr); code != 0 {
			last = code
		}
	}
	return last
}

// waitReadyz waits for /readyz to answer 200 and returns how long after the
// monitor's return it did; the check runs every 15 s.
func waitReadyz(t *testing.T, d *harness.Driver, addr string, back time.Time) time.Duration {
	t.Helper()
	for time.Since(back) < time.Minute {
		requireAlive(t, d)
		if readyz(addr) == http.StatusOK {
			return time.Since(back)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Error("/readyz did not turn 200 within a minute of the monitor's return")
	return time.Since(back)
}

// requireAlive stops the scenario when the driver process is gone: it must
// ride out the outage without a restart.
func requireAlive(t *testing.T, d *harness.Driver) {
	t.Helper()
	if !d.Alive() {
		t.Fatal("the driver died after the outage (its log, printed below, ends with the reason)")
	}
}

func readyz(addr string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func runMon(t *testing.T, p *harness.Pool, script, verb string) {
	t.Helper()
	cmd := exec.Command("bash", script, verb)
	cmd.Env = append(os.Environ(), "CEPH_DIR="+p.Env.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mon.sh %s: %v: %s", verb, err, out)
	}
}

func cleanUpMonScenario(t *testing.T, p *harness.Pool, d *harness.Driver, res *outcome, victims []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := append(append([]string{}, res.created...), victims...)
	if resp, err := d.Controller().CreateVolume(ctx, p.CreateReq("pvc-warm")); err == nil {
		ids = append(ids, resp.Volume.VolumeId)
	}
	for _, id := range ids {
		// Retry restarts a driver that died, so that a failed scenario
		// still removes its volumes.
		err := d.Retry(ctx, func(c context.Context) error {
			_, err := d.Controller().DeleteVolume(c, p.DeleteReq(id))
			return err
		})
		if err != nil {
			t.Errorf("clean-up of %s: %v", id, err)
		}
	}
}

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func sum(m map[codes.Code]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// rpcDuration is the duration field of the driver's per-RPC log line.
var rpcDuration = regexp.MustCompile(`"RPC (?:done|failed)".*? duration="([^"]+)"`)

// serverOverDeadline counts the RPCs the driver's log shows running longer
// than limit, and all the RPCs it shows.
func serverOverDeadline(t *testing.T, d *harness.Driver, limit time.Duration) (over, seen int) {
	t.Helper()
	data, err := os.ReadFile(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rpcDuration.FindAllSubmatch(data, -1) {
		took, err := time.ParseDuration(string(m[1]))
		if err != nil {
			t.Fatalf("duration %q in the driver log: %v", m[1], err)
		}
		seen++
		if took > limit {
			over++
		}
	}
	if seen == 0 {
		t.Fatal("no RPC duration in the driver log: the server-side check saw nothing")
	}
	return over, seen
}
