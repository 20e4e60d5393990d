package metrics

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestObserveRPCCountsByMethodAndCodeAndTimesByMethod(t *testing.T) {
	m := New()
	m.ObserveRPC("/csi.v1.Controller/CreateVolume", codes.OK.String(), 20*time.Millisecond)
	m.ObserveRPC("/csi.v1.Controller/CreateVolume", codes.OK.String(), 30*time.Millisecond)
	m.ObserveRPC("/csi.v1.Controller/CreateVolume", codes.DeadlineExceeded.String(), time.Second)
	m.ObserveRPC("/csi.v1.Node/NodeStageVolume", codes.Internal.String(), time.Millisecond)

	text := scrape(t, m)
	cases := []struct {
		method, code string
		want         int
	}{
		{"CreateVolume", "OK", 2},
		{"CreateVolume", "DeadlineExceeded", 1},
		{"NodeStageVolume", "Internal", 1},
	}
	for _, c := range cases {
		line := fmt.Sprintf("rbdcsi_rpc_requests_total{code=%q,method=%q} %d\n", c.code, c.method, c.want)
		if !strings.Contains(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if strings.Contains(text, `rbdcsi_rpc_requests_total{code="OK",method="NodeStageVolume"}`) {
		t.Error("a series for a code that never happened")
	}
	for _, want := range []string{
		`rbdcsi_rpc_duration_seconds_count{method="CreateVolume"} 3`,
		`rbdcsi_rpc_duration_seconds_count{method="NodeStageVolume"} 1`,
		`rbdcsi_rpc_duration_seconds_bucket{method="CreateVolume",le="0.025"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func TestObserveCephOpTimesEveryOpAndCountsErrorsByReason(t *testing.T) {
	m := New()
	wrapped := func(e error) error {
		return &ceph.OpError{Op: "create image", Target: "kube/x", Err: fmt.Errorf("%w: ctx", e)}
	}
	m.ObserveCephOp("create image", time.Millisecond, nil)
	m.ObserveCephOp("create image", 5*time.Second, wrapped(ceph.ErrTimeout))
	m.ObserveCephOp("set metadata of", time.Millisecond, wrapped(ceph.ErrNotFound))
	m.ObserveCephOp("look up pool", time.Millisecond, errors.New("strange"))

	text := scrape(t, m)
	for _, want := range []string{
		`rbdcsi_ceph_operation_duration_seconds_count{operation="create_image"} 2`,
		`rbdcsi_ceph_operation_duration_seconds_count{operation="set_metadata"} 1`,
		`rbdcsi_ceph_operation_errors_total{operation="create_image",reason="timeout"} 1`,
		`rbdcsi_ceph_operation_errors_total{operation="set_metadata",reason="not_found"} 1`,
		`rbdcsi_ceph_operation_errors_total{operation="look_up_pool",reason="other"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func TestErrorReasonNamesEveryBackendErrorKind(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{ceph.ErrAuth, "auth"},
		{ceph.ErrPermission, "permission"},
		{fmt.Errorf("connect: %w", ceph.ErrTimeout), "timeout"},
		{ceph.ErrUnavailable, "unavailable"},
		{ceph.ErrNotFound, "not_found"},
		{ceph.ErrExists, "exists"},
		{ceph.ErrBusy, "busy"},
		{ceph.ErrNoSpace, "no_space"},
		{ceph.ErrNoManager, "no_manager"},
		{ceph.ErrInvalid, "invalid"},
		{errors.New("boom"), "other"},
	}
	for _, c := range cases {
		if got := ErrorReason(c.err); got != c.want {
			t.Errorf("ErrorReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestOperationLabelIsASnakeCaseVerbPhrase(t *testing.T) {
	cases := map[string]string{
		"create image":            "create_image",
		"set metadata of":         "set_metadata",
		"schedule trash purge of": "schedule_trash_purge",
		"read usage of pool":      "read_usage_of_pool",
		"  Look  Up Pool ":        "look_up_pool",
	}
	for in, want := range cases {
		if got := OperationLabel(in); got != want {
			t.Errorf("OperationLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGaugesReadTheirSourcesAtEachScrape(t *testing.T) {
	m := New()
	conns, queue := 2, 5
	mapped := map[string]int{"fuse": 3}
	m.SetConnections(func() int { return conns })
	m.SetQueueLength("purge", func() int { return queue })
	m.SetMappedVolumes([]string{"krbd", "rbd-nbd", "fuse"}, func() map[string]int { return mapped })
	// A second registration (a restart of the wiring) must not panic.
	m.SetConnections(func() int { return -1 })

	first := scrape(t, m)
	conns, queue, mapped = 0, 1, map[string]int{"krbd": 1, "other": 2}
	second := scrape(t, m)
	cases := []struct {
		text, want string
	}{
		{first, "rbdcsi_ceph_connections 2"},
		{first, `rbdcsi_background_queue_length{queue="purge"} 5`},
		{first, `rbdcsi_node_mapped_volumes{mapper="fuse"} 3`},
		{first, `rbdcsi_node_mapped_volumes{mapper="krbd"} 0`},
		{first, `rbdcsi_node_mapped_volumes{mapper="rbd-nbd"} 0`},
		{second, "rbdcsi_ceph_connections 0"},
		{second, `rbdcsi_background_queue_length{queue="purge"} 1`},
		{second, `rbdcsi_node_mapped_volumes{mapper="krbd"} 1`},
		{second, `rbdcsi_node_mapped_volumes{mapper="fuse"} 0`},
		{second, `rbdcsi_node_mapped_volumes{mapper="other"} 2`},
	}
	for i, c := range cases {
		if !strings.Contains(c.text, c.want+"\n") {
			t.Errorf("case %d: scrape lacks %q", i, c.want)
		}
	}
}

// scrape renders the registry as the /metrics endpoint would.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := get(t, Handler(m, nil), "/metrics")
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}
