// Command rbd-csi is a Kubernetes CSI driver for Ceph RBD block storage. One
// binary serves the Identity, Controller and Node services; --mode selects
// which of the latter two run in this process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/driver"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/memrelease"
	"github.com/rbd-csi/rbd-csi/internal/metrics"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/version"
)

type config struct {
	endpoint      string
	driverName    string
	nodeID        string
	mode          string
	clusterConfig string
	kmsConfig     string
	instanceID    string
	secretsDir    string
	cephTimeout   time.Duration
	idleTimeout   time.Duration
	mapper        string
	stateDir      string
	keyringDir    string
	nbdReattach   time.Duration
	maxDepth      int
	metricsAddr   string
	releaseAfter  time.Duration
	showVersion   bool
}

func parseFlags(fs *flag.FlagSet, args []string) (config, error) {
	var c config
	fs.StringVar(&c.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint: unix:///path/to/csi.sock (or unix:/path)")
	fs.StringVar(&c.driverName, "drivername", driver.DefaultName, "CSI driver name; StorageClasses select the driver with provisioner: <name>")
	fs.StringVar(&c.nodeID, "nodeid", "", "this node's ID (the Kubernetes node name); required in node and all modes")
	fs.StringVar(&c.mode, "mode", string(driver.ModeAll), "services to serve: controller, node or all")
	fs.StringVar(&c.clusterConfig, "cluster-config", "", `path to the cluster config: JSON list of {"clusterID": "...", "monitors": ["host:port", ...], "rbd": {"radosNamespace": "..."}} (ceph-csi config.json format)`)
	fs.StringVar(&c.kmsConfig, "kms-config", "", `path to the KMS config of encrypted volumes: JSON object from encryptionKMSID to {"encryptionKMSType": "secret-kek", "secretKey": "<Secret key holding the KEK>"}; volumes without encryptionKMSID need none (their KEK is under encryptionKEK)`)
	fs.StringVar(&c.instanceID, "instance-id", "default", "keeps two installations sharing a Ceph pool apart: image names are derived from it; never change it on a running installation")
	fs.StringVar(&c.secretsDir, "secrets-dir", "", "optional directory with one sub-directory per clusterID holding userID and userKey files (a mounted Secret). Controller: GetCapacity, ListVolumes and ListSnapshots, which carry no secrets, cover every RBD pool of the cluster from the start with it (without it only pools a call with secrets has shown), and ControllerPublish/Unpublish use it when the request has no secrets. Node: re-attaching rbd-nbd devices at start-up (after a container restart killed their rbd-nbd processes)")
	fs.DurationVar(&c.cephTimeout, "ceph-timeout", librbd.DefaultOptions.OpTimeout, "upper bound of every Ceph operation and of connecting to a cluster (keep it below the sidecars' --timeout); the pieces of a half-created image are left alone for twice this long, as they may be a create still running")
	fs.DurationVar(&c.idleTimeout, "ceph-idle-timeout", librbd.DefaultOptions.IdleTimeout, "close a Ceph connection unused for this long")
	fs.StringVar(&c.mapper, "mapper", "krbd", "node: default way to attach images when the StorageClass has no mounter parameter: krbd, rbd-nbd or fuse")
	fs.IntVar(&c.maxDepth, "max-clone-depth", driver.DefaultMaxCloneDepth, "controller: most ancestors (snapshots, restores, clones) an image may read through; a deeper one is flattened before use")
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/rbd-csi", "node: directory for per-volume state and mapper working files; must survive plugin restarts")
	fs.StringVar(&c.keyringDir, "keyring-dir", mapper.DefaultKeyringDir, "node: private directory (created 0700; mount a tmpfs there) for the keyring files rbd-nbd and rbd-fuse read while mapping; each is removed when its map call returns, leftovers of a killed plugin at start-up")
	fs.DurationVar(&c.nbdReattach, "nbd-reattach-timeout", mapper.DefaultNBDReattachTimeout, "node: how long the kernel keeps an rbd-nbd device and queues its I/O after its rbd-nbd process died (rbd-nbd --reattach-timeout; whole seconds, 1s to 1h), for the plugin to re-attach it after a restart; a StorageClass's mapOptions reattach-timeout wins")
	fs.StringVar(&c.metricsAddr, "metrics-address", "", "serve Prometheus metrics (/metrics) and health (/healthz, /readyz: 503 while no configured cluster is reachable) over HTTP on host:port; off when empty")
	fs.DurationVar(&c.releaseAfter, "release-memory-after", defaultReleaseAfter, "hand the memory freed by a burst of calls back to the kernel once no call came for this long (glibc's arenas of the Ceph libraries and the Go heap); 0 leaves that to the allocators")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "rbd-csi %s: CSI driver for Ceph RBD\n\nUsage: rbd-csi [flags]\n       rbd-csi setup --pool POOL --user USER [flags]   wire a Ceph cluster in (see rbd-csi setup --help)\n       rbd-csi doctor [flags]                         check a cluster and the nodes' kernels (see rbd-csi doctor --help)\n       rbd-csi rotate-kek --pool POOL [flags]         re-wrap the keys of encrypted volumes with a new KEK (see rbd-csi rotate-kek --help)\n\nFlags:\n", version.Version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.releaseAfter < 0 {
		return c, fmt.Errorf("--release-memory-after %v: want 0 (off) or a positive duration", c.releaseAfter)
	}
	if c.nbdReattach <= 0 {
		// 0 means "use the default" inside; here it would be a silent surprise.
		return c, fmt.Errorf("--nbd-reattach-timeout %v: want whole seconds from 1s to 1h", c.nbdReattach)
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 {
		if sub, ok := subcommands[os.Args[1]]; ok {
			os.Exit(sub(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	c, err := parseFlags(flag.CommandLine, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if c.showVersion {
		fmt.Println(version.Version)
		return
	}
	if err := run(c); err != nil {
		klog.ErrorS(err, "rbd-csi failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(c config) error {
	mode, err := driver.ParseMode(c.mode)
	if err != nil {
		return err
	}
	clusters, err := clusterconfig.Load(c.clusterConfig)
	if err != nil {
		return err
	}
	kmsConfig, err := kms.LoadConfig(c.kmsConfig)
	if err != nil {
		return err
	}
	var m *metrics.Metrics
	if c.metricsAddr != "" {
		m = metrics.New()
	}
	backend := librbd.New(backendOptions(c, m))
	defer backend.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := driverOptions(c, mode, clusters, backend, m)
	opts.KMS = kmsConfig
	if c.releaseAfter > 0 {
		r := memrelease.New(c.releaseAfter)
		go r.Run(ctx)
		opts.Observer = append(observers{workObserver{r}}, observersOf(opts.Observer)...)
	}
	d, err := driver.New(opts)
	if err != nil {
		return err
	}
	if m != nil {
		stopMetrics, err := serveMetrics(c.metricsAddr, m, d, backend, clusters)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	srv, err := d.Serve(c.endpoint)
	if err != nil {
		return err
	}
	<-ctx.Done()
	klog.InfoS("Shutting down")
	srv.Stop(10 * time.Second)
	return nil
}

// backendOptions are the librbd settings; with metrics on, every Ceph
// operation is measured.
func backendOptions(c config, m *metrics.Metrics) librbd.Options {
	opts := librbd.Options{OpTimeout: c.cephTimeout, IdleTimeout: c.idleTimeout}
	if m != nil {
		opts.Observe = m.ObserveCephOp
	}
	return opts
}

// driverOptions are the driver's settings; with metrics on, every CSI call
// is measured.
func driverOptions(c config, mode driver.Mode, clusters *clusterconfig.Config, b *librbd.Backend, m *metrics.Metrics) driver.Options {
	opts := driver.Options{
		Name: c.driverName, NodeID: c.nodeID, Mode: mode, InstanceID: c.instanceID,
		Clusters: clusters, Backend: b, SecretsDir: c.secretsDir,
		Node:          driver.NodeOptions{StateDir: c.stateDir, KeyringDir: c.keyringDir, Mapper: c.mapper, NBDReattachTimeout: c.nbdReattach},
		MaxCloneDepth: c.maxDepth,
	}
	if m != nil {
		// Only a non-nil *Metrics goes in: a nil pointer in the interface
		// would pass the driver's nil check and then panic.
		opts.Observer = m
	}
	return opts
}

// defaultReleaseAfter is --release-memory-after's default: longer than the
// gaps inside a burst of provisioning or pod starts, short enough that the
// memory is back before anyone looks.
const defaultReleaseAfter = 5 * time.Second

// observers tells each of its members of every call.
type observers []driver.RPCObserver

// ObserveRPC implements driver.RPCObserver.
func (o observers) ObserveRPC(method, code string, took time.Duration) {
	for _, x := range o {
		x.ObserveRPC(method, code, took)
	}
}

func observersOf(o driver.RPCObserver) observers {
	if o == nil {
		return nil
	}
	return observers{o}
}

// workObserver reports the calls that count as work to the memory
// releaser.
type workObserver struct{ r *memrelease.Releaser }

// ObserveRPC implements driver.RPCObserver.
func (w workObserver) ObserveRPC(method, _ string, _ time.Duration) {
	if countsAsWork(method) {
		w.r.Worked()
	}
}

// countsAsWork is every call but the Identity service's: livenessprobe's
// and the registrar's Probe and GetPluginInfo every few seconds allocate
// next to nothing and would otherwise bring a release after each.
func countsAsWork(method string) bool {
	return !strings.HasPrefix(method, "/csi.v1.Identity/")
}

// Readiness checks run this often, each bounded by readinessTimeout: often
// enough that a Pod turns ready soon after its cluster comes back, rarely
// enough to be no load on the monitors.
const (
	readinessInterval = 15 * time.Second
	readinessTimeout  = 5 * time.Second
)

// serveMetrics connects the gauges to their sources, starts the background
// cluster checks and the HTTP server, and returns what stops them.
func serveMetrics(addr string, m *metrics.Metrics, d *driver.Driver, b *librbd.Backend, clusters *clusterconfig.Config) (func(), error) {
	m.SetConnections(b.OpenConnections)
	m.SetQueueLength("purge", d.PurgeQueueLength)
	m.SetQueueLength("flatten", d.FlattenQueueLength)
	m.SetMappedVolumes(driver.MapperNames(), d.MappedVolumes)
	checks := map[string]metrics.Check{}
	for _, cl := range clusters.Clusters() {
		checks[cl.ID] = metrics.MonitorsReachable(cl.Monitors)
	}
	ready := metrics.NewReadiness(checks, readinessInterval, readinessTimeout, m)
	ready.Start()
	srv, err := metrics.Serve(addr, m, ready)
	if err != nil {
		ready.Stop()
		return nil, err
	}
	return func() { srv.Close(); ready.Stop() }, nil
}
