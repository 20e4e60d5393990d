// Package chaos is the fault-injection suite (`make chaos`): against the real
// Ceph it SIGKILLs the controller during provisioning, stops the monitor with
// calls in flight, SIGKILLs the node plugin with volumes staged and
// published, and races duplicate creates with deletes. Each scenario prints
// one FIGURE line; the required figures are asserted, so the suite fails
// when one is off. Every driver runs at -v=10 and its log is searched for
// the test keys at the end of each scenario.
package chaos

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/e2e/harness"
)

const clusterID = "chaos"

// requireChaos skips unless the suite was asked for: it stops the cluster's
// monitor, which would disturb every other test sharing the cluster.
func requireChaos(t *testing.T) {
	t.Helper()
	if os.Getenv("RBDCSI_CHAOS") != "1" {
		t.Skip("fault-injection suite: runs under `make chaos` (RBDCSI_CHAOS=1), as it stops the Ceph monitor and SIGKILLs drivers")
	}
}

// controllerArgs runs a controller at the highest verbosity, so that the
// secret check at the end of a scenario sees every line the driver can log.
func controllerArgs(p *harness.Pool, instance string, extra ...string) []string {
	return append([]string{"--mode=controller", "--cluster-config=" + p.ConfigPath(), "--instance-id=" + instance, "--ceph-timeout=10s", "-v=10"}, extra...)
}

// figure is one scenario's result line: printed for make chaos to collect,
// and appended to $RBDCSI_CHAOS_FIGURES when set.
type figure struct {
	scenario string
	keys     []string
	values   map[string]any
}

func newFigure(scenario string) *figure { return &figure{scenario: scenario, values: map[string]any{}} }

func (f *figure) set(key string, v any) {
	if _, ok := f.values[key]; !ok {
		f.keys = append(f.keys, key)
	}
	f.values[key] = v
}

func (f *figure) String() string {
	parts := make([]string, 0, len(f.keys))
	for _, k := range f.keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, f.values[k]))
	}
	return fmt.Sprintf("FIGURE %s: %s", f.scenario, strings.Join(parts, " "))
}

// print writes the line out; deferred first in a scenario, it runs last,
// after the scenario's assertions recorded their values.
func (f *figure) print(t *testing.T) {
	line := f.String()
	fmt.Println(line)
	if path := os.Getenv("RBDCSI_CHAOS_FIGURES"); path != "" {
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Errorf("figures file: %v", err)
			return
		}
		defer fh.Close()
		fmt.Fprintln(fh, line)
	}
}

// zero records a count that must be 0 and fails the test otherwise.
func (f *figure) zero(t *testing.T, key string, n int, detail ...any) {
	t.Helper()
	f.set(key, n)
	if n != 0 {
		t.Errorf("%s = %d, want 0 %v", key, n, detail)
	}
}

// secretsInLog records how many of the keys the driver logged (must be 0).
func (f *figure) secretsInLog(t *testing.T, drivers []*harness.Driver, keys ...string) {
	t.Helper()
	n := 0
	for _, d := range drivers {
		found, err := d.LogHolds(keys...)
		if err != nil {
			t.Errorf("read driver log: %v", err)
		}
		n += len(found)
	}
	// Never print the keys themselves, not even in a failure.
	f.zero(t, "secrets_in_log", n)
}

// whileFailedPrecondition calls fn until it returns anything but
// FailedPrecondition, as a kubelet retries a stage or unstage the driver
// refused for now (another client still on the image, a device still
// held), for at most limit, every pause. It returns the number of calls and
// fn's last error.
func whileFailedPrecondition(limit, pause time.Duration, fn func() error) (int, error) {
	deadline := time.Now().Add(limit)
	for n := 1; ; n++ {
		err := fn()
		if status.Code(err) != codes.FailedPrecondition || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(pause)
	}
}
