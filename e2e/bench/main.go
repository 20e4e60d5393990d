// Command bench measures the driver against baselines taken in the same run
// on the same cluster, and prints one line per phase with throughput,
// latency percentiles and the driver/baseline ratio.
//
// Controller phases: CreateVolume and DeleteVolume through the driver's gRPC
// socket against raw go-ceph rbd.CreateImage / rbd.RemoveImage of the same
// kind of image (1 GiB, layering), at concurrency 1 and 16; CreateSnapshot
// and CreateVolume from a snapshot against raw snapshot create and clone
// (snapshot.go); then the time a DeleteVolume of a 100 GiB thin image takes.
//
// Node phases (node.go, throughput.go; root): NodeStage+NodePublish and the
// reverse against the same steps by hand, per mapper (-node-mappers; krbd
// and rbd-nbd run in make test-kernel's guest), and with -io-mib the
// sequential and random throughput through a driver-published volume
// against a hand-attached one.
//
// At the end the driver's metrics endpoint is scraped and the number of
// observations in each RPC method's latency histogram printed (metrics.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/driver"
	"github.com/rbd-csi/rbd-csi/internal/metrics"
)

type config struct {
	count       int
	concurrency []int
	bigGiB      int
	nodeCount   int
	nodeMappers []string
	nodeOnly    bool
	ioMiB       int
	monitors    string
	key         string
	pool        string
	// runs repeats the controller throughput phases (their spread is printed).
	runs int
	// snapCount is the volumes per snapshot phase (count when 0).
	snapCount int
	// footprintPairs is the Create+Delete pairs the footprint phase makes
	// through the controller binary (0 skips it).
	footprintPairs int
	driverBinary   string
	roundTrips     bool
	resultsDir     string
	cpuProfile     string
	memProfile     string
	// scale, when set, runs only the scale phases with this many volumes.
	scale int
	// scaleNode is the fuse volumes the scale phases stage on one node.
	scaleNode int
	// driverLog, when set, receives the in-process driver's log at -v=4,
	// which times every command the node path runs.
	driverLog string
}

func main() {
	var c config
	var conc string
	flag.IntVar(&c.count, "count", 100, "volumes per phase")
	flag.StringVar(&conc, "concurrency", "1,16", "comma-separated concurrency levels")
	flag.IntVar(&c.bigGiB, "big-gib", 100, "size of the thin image whose deletion is timed")
	flag.IntVar(&c.nodeCount, "node-count", 10, "volumes staged and published in the node phases (0 skips them; needs root)")
	mappers := flag.String("node-mappers", "fuse", "comma-separated mappers the node phases run with (krbd and rbd-nbd need the kernel's rbd and nbd modules: make test-kernel)")
	flag.BoolVar(&c.nodeOnly, "node-only", false, "run only the node phases")
	flag.IntVar(&c.ioMiB, "io-mib", 0, "MiB each throughput phase moves through a published volume, driver against by hand (0 skips them)")
	flag.IntVar(&c.runs, "runs", 1, "times the controller throughput phases run (the spread of their ratios is printed)")
	flag.IntVar(&c.snapCount, "snap-count", 0, "volumes per snapshot phase (0: -count)")
	flag.IntVar(&c.footprintPairs, "footprint-pairs", 0, "CreateVolume+DeleteVolume pairs at c=16 through the driver binary as a controller process of its own, for its CPU per pair and RSS against raw go-ceph's CPU (0 skips)")
	flag.StringVar(&c.driverBinary, "driver-binary", "bin/rbd-csi", "driver binary the footprint phase runs")
	flag.BoolVar(&c.roundTrips, "round-trips", true, "count the OSD round trips per controller RPC and per raw step (osd.0 perf counters)")
	flag.StringVar(&c.resultsDir, "results", "bin/bench-results", "folder under which each run writes <time>/table.txt and latency histogram SVGs (empty: none)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the controller phases (driver in-process) to this file")
	flag.StringVar(&c.memProfile, "memprofile", "", "write a heap profile after the controller phases to this file")
	flag.IntVar(&c.scale, "scale", 0, "run only the scale phases (make bench-scale): fill the pool with this many volumes through a controller process and time what must not grow with it")
	flag.IntVar(&c.scaleNode, "scale-node", 100, "with -scale: fuse volumes staged and published through a node plugin process, whose restart and NodeGetVolumeStats sweep are timed (0 skips; needs root)")
	flag.StringVar(&c.driverLog, "driver-log", "", "write the in-process driver's log at verbosity 4 (each node command and its duration) to this file (empty: discarded)")
	rawRSSPairs := flag.Int("raw-rss-child", 0, "internal: be the footprint phase's raw go-ceph process; make this many rbd.CreateImage+rbd.RemoveImage pairs at c=16 and print the process's memory")
	flag.Parse()
	c.nodeMappers = strings.Split(*mappers, ",")
	for _, s := range strings.Split(conc, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			fail(fmt.Errorf("bad concurrency %q", s))
		}
		c.concurrency = append(c.concurrency, n)
	}
	c.monitors, c.key, c.pool = os.Getenv("CEPH_MON_HOST"), os.Getenv("CEPH_ADMIN_KEY"), os.Getenv("CEPH_POOL")
	if c.monitors == "" || c.key == "" {
		fail(fmt.Errorf("CEPH_MON_HOST and CEPH_ADMIN_KEY must be set (make bench starts a cluster)"))
	}
	if c.pool == "" {
		c.pool = "kube"
	}
	if c.snapCount == 0 {
		c.snapCount = c.count
	}
	if *rawRSSPairs > 0 {
		if err := rawRSSChild(c, *rawRSSPairs); err != nil {
			fail(err)
		}
		return
	}
	if err := run(c); err != nil {
		fail(err)
	}
}

// openPool connects raw go-ceph to the bench's pool.
func openPool(c config) (*bench, func(), error) {
	conn, err := rawConn(c)
	if err != nil {
		return nil, nil, err
	}
	io, err := conn.OpenIOContext(c.pool)
	if err != nil {
		conn.Shutdown()
		return nil, nil, err
	}
	return &bench{cfg: c, conn: conn, io: io}, func() { io.Destroy(); conn.Shutdown() }, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type bench struct {
	cfg     config
	conn    *rados.Conn
	io      *rados.IOContext
	client  csi.ControllerClient
	node    csi.NodeClient
	backend *librbd.Backend
	cluster ceph.Cluster
	admin   ceph.Credentials
	// metricsAddr is the driver's metrics endpoint, scraped at the end.
	metricsAddr string
	sum         *summary
}

func run(c config) error {
	closeLog, err := driverLogTo(c.driverLog)
	if err != nil {
		return err
	}
	defer closeLog()
	b, closePool, err := openPool(c)
	if err != nil {
		return err
	}
	defer closePool()
	b.admin, b.sum = ceph.Credentials{User: "admin", Key: c.key}, newSummary()
	stop, err := b.startDriver()
	if err != nil {
		return err
	}
	defer stop()

	if c.scale > 0 {
		if err := b.scalePhases(c.scale); err != nil { // scale.go
			return fmt.Errorf("scale: %w", err)
		}
		return b.finish()
	}
	if c.nodeOnly {
		if err := b.runNodePhases(); err != nil {
			return err
		}
		return b.finish()
	}
	header := fmt.Sprintf("rbd-csi bench: %d volumes of 1 GiB per phase (snapshot phases %d), %d run(s), pool %s, monitors %s, load average at start %s",
		c.count, c.snapCount, c.runs, c.pool, c.monitors, loadAverage())
	fmt.Println(header)
	if c.roundTrips {
		if err := b.roundTrips(); err != nil { // roundtrips.go
			return err
		}
	}
	if err := b.profiledControllerPhases(); err != nil {
		return err
	}
	if err := b.bigDelete(); err != nil {
		return err
	}
	if c.footprintPairs > 0 {
		if err := b.footprint(c.driverBinary, c.footprintPairs, 16, b.sum); err != nil { // footprint.go
			return fmt.Errorf("footprint: %w", err)
		}
	}
	if err := b.runNodePhases(); err != nil {
		return err
	}
	if err := reportMetrics(b.metricsAddr); err != nil {
		return err
	}
	return b.finish()
}

// profiledControllerPhases runs the controller throughput phases c.runs
// times, each run with its snapshot phases, under the CPU profile when
// asked.
func (b *bench) profiledControllerPhases() error {
	c := b.cfg
	stopProfile, err := startCPUProfile(c.cpuProfile)
	if err != nil {
		return err
	}
	for run := 1; run <= c.runs; run++ {
		if c.runs > 1 {
			fmt.Printf("-- run %d of %d\n", run, c.runs)
		}
		for _, n := range c.concurrency {
			if err := b.controllerPhases(n); err != nil {
				return err
			}
		}
		for _, n := range c.concurrency {
			if err := b.snapshotPhases(n, run); err != nil { // snapshot.go
				return err
			}
		}
	}
	stopProfile()
	return writeHeapProfile(c.memProfile)
}

// finish prints the spread of repeated figures and the side-by-side
// table, and writes them with the latency histograms to the results folder.
func (b *bench) finish() error {
	fmt.Println()
	b.sum.spread(os.Stdout)
	b.sum.table(os.Stdout)
	if b.cfg.resultsDir == "" {
		return nil
	}
	dir, err := b.sum.write(b.cfg.resultsDir, fmt.Sprintf("rbd-csi bench, load average at the end %s", loadAverage()))
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Printf("results: %s (table.txt, latency-*.svg)\n", dir)
	return nil
}

// loadAverage is /proc/loadavg's first three fields: how busy the shared
// machine was, next to figures that are ratios for that reason.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// runNodePhases runs the node phases unless they are turned off or the
// process cannot mount.
func (b *bench) runNodePhases() error {
	if b.cfg.nodeCount == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		fmt.Println("node phases skipped: they mount filesystems and attach loop devices, run as root")
		return nil
	}
	for _, m := range b.cfg.nodeMappers {
		if err := b.nodePhases(b.cfg.nodeCount, m); err != nil {
			return fmt.Errorf("node phases with %s: %w", m, err)
		}
	}
	return b.throughputPhases()
}

func rawConn(c config) (*rados.Conn, error) {
	conn, err := rados.NewConnWithUser("admin")
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"mon_host": c.monitors, "key": c.key, "admin_socket": "", "log_to_stderr": "false", "err_to_stderr": "false"} {
		if err := conn.SetConfigOption(k, v); err != nil {
			return nil, err
		}
	}
	return conn, conn.Connect()
}

func (b *bench) startDriver() (func(), error) {
	cfg, err := clusterconfig.Parse([]byte(`[{"clusterID":"bench","monitors":["` + strings.Join(strings.Split(b.cfg.monitors, ","), `","`) + `"]}]`))
	if err != nil {
		return nil, err
	}
	b.cluster, _ = cfg.Lookup("bench")
	m := metrics.New()
	b.backend = librbd.New(librbd.Options{Observe: m.ObserveCephOp})
	dir, err := os.MkdirTemp("", "rbd-csi-bench")
	if err != nil {
		return nil, err
	}
	d, err := driver.New(driver.Options{
		Mode: driver.ModeAll, NodeID: benchNodeID, InstanceID: fmt.Sprintf("bench-%d", time.Now().UnixNano()),
		Clusters: cfg, Backend: b.backend, Observer: m,
		Node: driver.NodeOptions{StateDir: filepath.Join(dir, "state"), KeyringDir: filepath.Join(dir, "keyrings"), Mapper: "fuse"},
	})
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "csi.sock")
	srv, err := d.Serve(sock)
	if err != nil {
		return nil, err
	}
	ms, err := serveMetrics(m)
	if err != nil {
		srv.Stop(time.Second)
		return nil, err
	}
	b.metricsAddr = ms.Addr()
	gc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	b.client = csi.NewControllerClient(gc)
	b.node = csi.NewNodeClient(gc)
	return func() { gc.Close(); srv.Stop(5 * time.Second); ms.Close(); b.backend.Close(); os.RemoveAll(dir) }, nil
}

func (b *bench) secrets() map[string]string {
	return map[string]string{"userID": "admin", "userKey": b.cfg.key}
}

func (b *bench) createReq(name string, size int64) *csi.CreateVolumeRequest {
	return b.createReqWith(name, size, "")
}

// createReqWith names the mapper the volume stages with (StorageClass
// parameter mounter; "" for the driver's default).
func (b *bench) createReqWith(name string, size int64, mapper string) *csi.CreateVolumeRequest {
	params := map[string]string{"clusterID": "bench", "pool": b.cfg.pool, "imageFeatures": "layering"}
	if mapper != "" {
		params["mounter"] = mapper
	}
	return &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		Parameters: params,
		Secrets:    b.secrets(),
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	}
}

func (b *bench) controllerPhases(conc int) error {
	n := b.cfg.count
	rawNames := names(fmt.Sprintf("bench-raw-c%d-", conc), n)
	rawCreate := func(i int) error { return b.rawImage(rawNames[i]) }
	ids := make([]string, n)
	drvCreate := func(i int) error {
		resp, err := b.client.CreateVolume(context.Background(), b.createReq(fmt.Sprintf("bench-c%d-%d", conc, i), 1<<30))
		if err == nil {
			ids[i] = resp.Volume.VolumeId
		}
		return err
	}
	drv, raw, err := measurePair(n, conc, drvCreate, rawCreate)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	b.report("CreateVolume", conc, drv, raw, "rbd.CreateImage", 0.9)

	rawDelete := func(i int) error { return rbd.RemoveImage(b.io, rawNames[i]) }
	drvDelete := func(i int) error {
		_, err := b.client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: ids[i], Secrets: b.secrets()})
		return err
	}
	if drv, raw, err = measurePair(n, conc, drvDelete, rawDelete); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	b.report("DeleteVolume", conc, drv, raw, "rbd.RemoveImage", 1.0)
	drain := b.waitTrashDrained(5 * time.Minute)
	fmt.Printf("  background purge of %d trashed images finished %v after the last DeleteVolume\n", n, drain.Round(time.Millisecond))
	return nil
}

// measurePair measures drv and raw over the same n items in the order
// raw, driver, driver, raw, each on half of the items, so that a load that
// rises or falls during the run (other work on the machine, the cluster
// warming up) weighs on both sides alike and the ratio stays meaningful.
func measurePair(n, conc int, drv, raw func(i int) error) (drvRes, rawRes result, err error) {
	half := n / 2
	lo := func(op func(int) error) func(int) error { return op }
	hi := func(op func(int) error) func(int) error { return func(i int) error { return op(half + i) } }
	steps := []struct {
		into *result
		n    int
		op   func(int) error
		what string
	}{
		{&rawRes, half, lo(raw), "raw"}, {&drvRes, half, lo(drv), "driver"},
		{&drvRes, n - half, hi(drv), "driver"}, {&rawRes, n - half, hi(raw), "raw"},
	}
	for _, s := range steps {
		r, err := measure(s.n, conc, s.op)
		if err != nil {
			return drvRes, rawRes, fmt.Errorf("%s: %w", s.what, err)
		}
		s.into.total += r.total
		s.into.latencies = append(s.into.latencies, r.latencies...)
	}
	return drvRes, rawRes, nil
}

func (b *bench) bigDelete() error {
	size := int64(b.cfg.bigGiB) << 30
	resp, err := b.client.CreateVolume(context.Background(), b.createReq("bench-big", size))
	if err != nil {
		return fmt.Errorf("create %d GiB volume: %w", b.cfg.bigGiB, err)
	}
	start := time.Now()
	if _, err := b.client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId, Secrets: b.secrets()}); err != nil {
		return err
	}
	took := time.Since(start)
	drain := b.waitTrashDrained(10 * time.Minute)
	fmt.Printf("DeleteVolume of a %d GiB thin image: returned in %v (background purge took %v more)\n", b.cfg.bigGiB, took.Round(time.Millisecond), drain.Round(time.Millisecond))
	return nil
}

// waitTrashDrained waits until no bench image is left in the trash.
func (b *bench) waitTrashDrained(limit time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < limit {
		entries, err := rbd.GetTrashList(b.io)
		pending := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Name, "csi-vol-") {
				pending++
			}
		}
		if err == nil && pending == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// result is one measured phase.
type result struct {
	total     time.Duration
	latencies []time.Duration
}

// summed is r with its total set to the sum of its latencies (phases run
// one call at a time).
func (r result) summed() result {
	r.total = sum(r.latencies)
	return r
}

func (r result) opsPerSec() float64 { return float64(len(r.latencies)) / r.total.Seconds() }

func (r result) pct(p float64) time.Duration {
	s := append([]time.Duration(nil), r.latencies...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s)-1) * p)
	return s[idx]
}

// measure runs op for i in [0,n) with conc workers.
func measure(n, conc int, op func(i int) error) (result, error) {
	lat := make([]time.Duration, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := time.Now()
				err := op(i)
				lat[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("op %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return result{total: time.Since(start), latencies: lat}, firstErr
}

// report prints one phase and records it in the summary with the least
// driver/raw throughput ratio the phase should reach (0: no goal).
// benchNodeID is the in-process node plugin's --node-id.
const benchNodeID = "bench"

func (b *bench) report(phase string, conc int, drv, raw result, rawName string, goal float64) {
	b.sum.throughput(fmt.Sprintf("%s c=%d", phase, conc), drv, raw, goal)
	fmt.Printf("%-13s c=%-2d driver %7.1f ops/s p50 %7s p99 %7s | raw %-16s %7.1f ops/s p50 %7s p99 %7s | ratio %.2f\n",
		phase, conc, drv.opsPerSec(), ms(drv.pct(0.5)), ms(drv.pct(0.99)),
		rawName, raw.opsPerSec(), ms(raw.pct(0.5)), ms(raw.pct(0.99)), drv.opsPerSec()/raw.opsPerSec())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// driverLogTo sends klog to path at verbosity 4, or nowhere when path is
// empty: the bench's own output is its figures.
func driverLogTo(path string) (func(), error) {
	klog.LogToStderr(false)
	if path == "" {
		klog.SetOutput(nilWriter{})
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("driver log: %w", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if err := fs.Set("v", "4"); err != nil {
		f.Close()
		return nil, err
	}
	klog.SetOutput(f)
	return func() { klog.Flush(); f.Close() }, nil
}

type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }
