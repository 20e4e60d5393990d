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
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/driver"
	"github.com/rbd-csi/rbd-csi/internal/version"
)

type config struct {
	endpoint      string
	driverName    string
	nodeID        string
	mode          string
	clusterConfig string
	instanceID    string
	secretsDir    string
	cephTimeout   time.Duration
	idleTimeout   time.Duration
	mapper        string
	stateDir      string
	showVersion   bool
}

func parseFlags(fs *flag.FlagSet, args []string) (config, error) {
	var c config
	fs.StringVar(&c.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint: unix:///path/to/csi.sock (or unix:/path)")
	fs.StringVar(&c.driverName, "drivername", driver.DefaultName, "CSI driver name; StorageClasses select the driver with provisioner: <name>")
	fs.StringVar(&c.nodeID, "nodeid", "", "this node's ID (the Kubernetes node name); required in node and all modes")
	fs.StringVar(&c.mode, "mode", string(driver.ModeAll), "services to serve: controller, node or all")
	fs.StringVar(&c.clusterConfig, "cluster-config", "", `path to the cluster config: JSON list of {"clusterID": "...", "monitors": ["host:port", ...], "rbd": {"radosNamespace": "..."}} (ceph-csi config.json format)`)
	fs.StringVar(&c.instanceID, "instance-id", "default", "keeps two installations sharing a Ceph pool apart: image names are derived from it; never change it on a running installation")
	fs.StringVar(&c.secretsDir, "secrets-dir", "", "optional directory with one sub-directory per clusterID holding userID and userKey files (a mounted Secret), used by GetCapacity and ListVolumes, which carry no secrets")
	fs.DurationVar(&c.cephTimeout, "ceph-timeout", librbd.DefaultOptions.OpTimeout, "upper bound of every Ceph operation and of connecting to a cluster (keep it below the sidecars' --timeout)")
	fs.DurationVar(&c.idleTimeout, "ceph-idle-timeout", librbd.DefaultOptions.IdleTimeout, "close a Ceph connection unused for this long")
	fs.StringVar(&c.mapper, "mapper", "krbd", "node: default way to attach images when the StorageClass has no mounter parameter: krbd, rbd-nbd or fuse")
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/rbd-csi", "node: directory for per-volume state and mapper working files; must survive plugin restarts")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "rbd-csi %s: CSI driver for Ceph RBD\n\nUsage: rbd-csi [flags]\n\nFlags:\n", version.Version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, nil
}

func main() {
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
	backend := librbd.New(librbd.Options{OpTimeout: c.cephTimeout, IdleTimeout: c.idleTimeout})
	defer backend.Close()
	d, err := driver.New(driver.Options{
		Name: c.driverName, NodeID: c.nodeID, Mode: mode, InstanceID: c.instanceID,
		Clusters: clusters, Backend: backend, SecretsDir: c.secretsDir,
		Node: driver.NodeOptions{StateDir: c.stateDir, Mapper: c.mapper},
	})
	if err != nil {
		return err
	}
	srv, err := d.Serve(c.endpoint)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	klog.InfoS("Shutting down")
	srv.Stop(10 * time.Second)
	return nil
}
