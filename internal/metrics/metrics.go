// Package metrics exposes what the driver does as Prometheus metrics and
// answers health checks over HTTP (--metrics-address).
//
// The package knows nothing of the driver: the driver reports RPCs and Ceph
// operations through the Observe* methods, and the gauges read their values
// through functions handed to the Set* methods when the metrics are
// scraped. Labels never name a volume, an image or a user, so the number of
// series stays bounded by the number of RPC methods, Ceph operations,
// mappers and clusters.
package metrics

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// namespace prefixes every metric name.
const namespace = "rbdcsi"

// Buckets of the latency histograms, in seconds. Most Ceph operations take
// milliseconds; the long tail (timeouts of --ceph-timeout, mkfs, rbd-fuse
// start-up) reaches tens of seconds, and anything past a minute is an outage
// whatever its exact length.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds the driver's collectors in their own registry, so that a
// test or a second driver in one process never collides with the global one.
type Metrics struct {
	reg          *prometheus.Registry
	rpcs         *prometheus.CounterVec
	rpcSeconds   *prometheus.HistogramVec
	cephSeconds  *prometheus.HistogramVec
	cephErrors   *prometheus.CounterVec
	mu           sync.Mutex
	sources      map[string]bool // keys of the gauges already registered
	clusterState *prometheus.GaugeVec
}

// New builds the collectors, with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rpc_requests_total",
			Help: "CSI calls served, by method and gRPC status code.",
		}, []string{"method", "code"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rpc_duration_seconds",
			Help: "Time to answer a CSI call, by method.", Buckets: latencyBuckets,
		}, []string{"method"}),
		cephSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "ceph_operation_duration_seconds",
			Help: "Time of one Ceph operation (connecting included), by operation.", Buckets: latencyBuckets,
		}, []string{"operation"}),
		cephErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "ceph_operation_errors_total",
			Help: "Failed Ceph operations, by operation and reason (timeout, unavailable, not_found, ...).",
		}, []string{"operation", "reason"}),
		clusterState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "cluster_reachable",
			Help: "1 when the last background check reached a monitor of the configured cluster, else 0.",
		}, []string{"cluster"}),
		sources: map[string]bool{},
	}
	m.reg.MustRegister(m.rpcs, m.rpcSeconds, m.cephSeconds, m.cephErrors, m.clusterState,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the collectors live, for the HTTP handler and tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveRPC records one answered CSI call. fullMethod is gRPC's
// "/csi.v1.Controller/CreateVolume"; the label is the method's last part.
// code is the gRPC code's name ("OK", "NotFound").
func (m *Metrics) ObserveRPC(fullMethod, code string, d time.Duration) {
	method := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
	m.rpcs.WithLabelValues(method, code).Inc()
	m.rpcSeconds.WithLabelValues(method).Observe(d.Seconds())
}

// ObserveCephOp records one Ceph operation; err nil is a success.
func (m *Metrics) ObserveCephOp(op string, d time.Duration, err error) {
	label := OperationLabel(op)
	m.cephSeconds.WithLabelValues(label).Observe(d.Seconds())
	if err != nil {
		m.cephErrors.WithLabelValues(label, ErrorReason(err)).Inc()
	}
}

// OperationLabel turns the backend's operation phrase ("set metadata of",
// "look up pool") into a label value ("set_metadata", "look_up_pool"): the
// phrases are written for error messages, where they precede their object.
func OperationLabel(op string) string {
	op = strings.TrimSpace(strings.ToLower(op))
	for _, suffix := range []string{" of", " to", " from"} {
		op = strings.TrimSuffix(op, suffix)
	}
	return strings.Join(strings.Fields(op), "_")
}

// reasons maps the backend's error kinds to label values, in the order the
// driver's status mapping tests them.
var reasons = []struct {
	err   error
	label string
}{
	{ceph.ErrAuth, "auth"},
	{ceph.ErrPermission, "permission"},
	{ceph.ErrTimeout, "timeout"},
	{ceph.ErrUnavailable, "unavailable"},
	{ceph.ErrNotFound, "not_found"},
	{ceph.ErrExists, "exists"},
	{ceph.ErrBusy, "busy"},
	{ceph.ErrNoSpace, "no_space"},
	{ceph.ErrNoManager, "no_manager"},
	{ceph.ErrInvalid, "invalid"},
	{ceph.ErrConflict, "conflict"},
}

// ErrorReason classifies a backend error for the errors counter; an error
// of no known kind is "other".
func ErrorReason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}

// SetConnections exposes the number of pooled Ceph connections, read from
// count at each scrape.
func (m *Metrics) SetConnections(count func() int) {
	m.registerOnce("connections", prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ceph_connections", Help: "Ceph connections held in the driver's pool.",
	}, func() float64 { return float64(count()) }))
}

// SetQueueLength exposes the length of a background work queue ("purge",
// "flatten"), read from length at each scrape.
func (m *Metrics) SetQueueLength(queue string, length func() int) {
	m.registerOnce("queue/"+queue, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "background_queue_length",
		Help:        "Tasks queued, running or waiting to retry in a background queue of the driver, by queue.",
		ConstLabels: prometheus.Labels{"queue": queue},
	}, func() float64 { return float64(length()) }))
}

// SetMappedVolumes exposes the volumes mapped on this node by mapper, read
// from count at each scrape; every mapper in mappers is reported, with 0
// when it maps nothing, so that a dashboard sees the series from the start.
func (m *Metrics) SetMappedVolumes(mappers []string, count func() map[string]int) {
	m.registerOnce("mapped", &mappedCollector{
		desc:    prometheus.NewDesc(namespace+"_node_mapped_volumes", "Volumes mapped (staged) on this node, by mapper.", []string{"mapper"}, nil),
		mappers: mappers,
		count:   count,
	})
}

// registerOnce registers c unless a source was already registered under
// key: wiring the same gauge twice keeps the first, where the registry
// would panic on the duplicate.
func (m *Metrics) registerOnce(key string, c prometheus.Collector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sources[key] {
		return
	}
	m.sources[key] = true
	m.reg.MustRegister(c)
}

// setClusterReachable records the outcome of a background cluster check.
func (m *Metrics) setClusterReachable(cluster string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.clusterState.WithLabelValues(cluster).Set(v)
}

// mappedCollector reads the per-mapper counts once per scrape, so the node
// plugin needs no bookkeeping of its own: its volume index is the truth.
type mappedCollector struct {
	desc    *prometheus.Desc
	mappers []string
	count   func() map[string]int
}

func (c *mappedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *mappedCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.count()
	seen := map[string]bool{}
	for _, name := range c.mappers {
		seen[name] = true
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[name]), name)
	}
	for name, n := range counts {
		if !seen[name] {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), name)
		}
	}
}
