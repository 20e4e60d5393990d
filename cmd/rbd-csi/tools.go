package main

// The operator subcommands, `rbd-csi setup` and `rbd-csi doctor`, live in
// the driver binary because it already links go-ceph: they reach the
// cluster through the driver's own connection code. This file is only
// flag glue; the logic is in internal/setup, internal/doctor and
// internal/cephadmin.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/librbd"
	"github.com/rbd-csi/rbd-csi/internal/cephadmin"
	"github.com/rbd-csi/rbd-csi/internal/doctor"
	"github.com/rbd-csi/rbd-csi/internal/driver"
	"github.com/rbd-csi/rbd-csi/internal/params"
	"github.com/rbd-csi/rbd-csi/internal/quantity"
	"github.com/rbd-csi/rbd-csi/internal/setup"
)

// Exit statuses of the subcommands.
const (
	exitOK       = 0
	exitError    = 1 // could not run (bad flags, no access, a command failed)
	exitUsage    = 2
	exitFindings = 3 // ran; the doctor found something that would fail
)

// subcommands are dispatched on the first argument.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"setup":      runSetup,
	"doctor":     runDoctor,
	"rotate-kek": runRotateKEK,
}

const accessHelp = `Admin access comes from $CEPH_MON_HOST and $CEPH_ADMIN_KEY when both are
set, else from ceph.conf (--ceph-conf, $CEPH_CONF, /etc/ceph/ceph.conf) and
the admin keyring (--keyring, $CEPH_KEYRING, the conf's keyring, then
/etc/ceph/ceph.client.admin.keyring); $CEPH_ADMIN_ID names another admin
user. Keys are never taken from the command line.
`

// common are the flags both subcommands take.
type common struct {
	conf, keyring  string
	timeout        time.Duration
	pool, user     string
	kernels        string
	kubectl        string
	nodesJSON      string
	classesJSON    string
	driverName     string
	nodeMapper     string
	output         string
	imageFeatures  string
	classesFromRun []doctor.StorageClass
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.conf, "ceph-conf", "", "ceph.conf with the monitors (mon host)")
	fs.StringVar(&c.keyring, "keyring", "", "keyring with the admin user's key")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "upper bound of each Ceph call and of connecting")
	fs.StringVar(&c.pool, "pool", "", "RBD pool")
	fs.StringVar(&c.user, "user", "", "cephx user of the driver, without \"client.\"")
	fs.StringVar(&c.kernels, "kernels", "", "comma-separated kernel versions of the nodes that map images (uname -r), e.g. 3.10,5.10")
	fs.StringVar(&c.kubectl, "kubectl", "", "path of kubectl: read the nodes' kernels and the driver's StorageClasses from the current Kubernetes context")
	fs.StringVar(&c.nodesJSON, "nodes-json", "", "file with `kubectl get nodes -o json` (\"-\": stdin) for the nodes' kernels")
	fs.StringVar(&c.classesJSON, "storageclasses-json", "", "file with `kubectl get storageclass -o json` (\"-\": stdin): the driver's StorageClasses are checked")
	fs.StringVar(&c.driverName, "driver-name", driver.DefaultName, "CSI driver name (the StorageClasses' provisioner)")
	fs.StringVar(&c.nodeMapper, "node-mapper", "krbd", "the node plugin's --mapper, for StorageClasses without a mounter parameter")
	fs.StringVar(&c.output, "o", "text", "report format: text or json")
}

func (c *common) client() (*cephadmin.Client, func(), error) {
	acc, err := cephadmin.LoadAccess(cephadmin.AccessOptions{Conf: c.conf, Keyring: c.keyring}, os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	b := librbd.New(librbd.Options{OpTimeout: c.timeout})
	return &cephadmin.Client{B: b, Access: acc, Timeout: c.timeout}, b.Close, nil
}

// doctorInput gathers the nodes and StorageClasses from the flags.
func (c *common) doctorInput(ctx context.Context) (doctor.Input, error) {
	in := doctor.Input{Pool: c.pool, User: c.user, NodeMapper: c.nodeMapper, Nodes: doctor.KernelList(c.kernels)}
	nodes, err := c.readKube(ctx, c.nodesJSON, "nodes")
	if err != nil {
		return in, err
	}
	if nodes != nil {
		n, err := doctor.NodesFromJSON(nodes)
		if err != nil {
			return in, fmt.Errorf("nodes: %w", err)
		}
		in.Nodes = append(in.Nodes, n...)
	}
	classes, err := c.readKube(ctx, c.classesJSON, "storageclasses")
	if err != nil {
		return in, err
	}
	if classes != nil {
		sc, err := doctor.StorageClassesFromJSON(classes, c.driverName)
		if err != nil {
			return in, fmt.Errorf("storageclasses: %w", err)
		}
		in.StorageClasses = sc
	}
	in.StorageClasses = append(in.StorageClasses, c.classesFromRun...)
	return in, nil
}

// readKube reads a file ("-": stdin), or asks kubectl when --kubectl is
// set and no file is given; nil when neither.
func (c *common) readKube(ctx context.Context, file, kind string) ([]byte, error) {
	switch {
	case file == "-":
		return io.ReadAll(os.Stdin)
	case file != "":
		return os.ReadFile(file)
	case c.kubectl != "":
		return doctor.Kubectl(ctx, c.kubectl, kind)
	}
	return nil, nil
}

func (c *common) validate() error {
	if c.output != "text" && c.output != "json" {
		return fmt.Errorf("-o %q: use text or json", c.output)
	}
	if c.timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", c.timeout)
	}
	return nil
}

// printReport writes the doctor's report and returns the exit status.
func printReport(r doctor.Report, format string, w io.Writer) int {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		r.Print(w)
	}
	if r.Failed > 0 {
		return exitFindings
	}
	return exitOK
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func parseSub(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n", fs.Args())
		return exitUsage
	}
	return -1
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rbd-csi doctor", flag.ContinueOnError)
	var c common
	c.register(fs)
	quotaWarn := fs.Float64("quota-warn", 0.8, "report a pool whose quota is used beyond this share")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: rbd-csi doctor [flags]

Inspects a Ceph cluster and the nodes that will map its images, and reports
what would make volumes fail before a pod is stuck: monitors unreachable, a
missing pool or one without the rbd application, a quota nearly full, a user
whose caps cannot create or map images, CRUSH tunables (and straw2 buckets,
require_min_compat_client) newer than a node's kernel, and image features of
the StorageClasses and of the pool's images that krbd on those kernels cannot
map. Every finding names its fix. Exit status 3 when something would fail,
1 when the doctor could not run.

`+accessHelp+`
Flags:
`)
		fs.PrintDefaults()
	}
	if rc := parseSub(fs, args, stderr); rc >= 0 {
		return rc
	}
	if err := c.validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signalContext()
	defer stop()
	in, err := c.doctorInput(ctx)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	in.QuotaWarn = *quotaWarn
	cl, closeFn, err := c.client()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	defer closeFn()
	return printReport(doctor.Run(ctx, cl, in), c.output, stdout)
}

// setupFlags are setup's own flags.
type setupFlags struct {
	quota                          string
	updateCaps, dryRun, withSecret bool
	clusterID, namespace           string
	configMap, secret              string
	storageClass, snapshotClass    string
	fsType                         string
	format                         string
}

func runSetup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rbd-csi setup", flag.ContinueOnError)
	var c common
	var s setupFlags
	c.register(fs)
	fs.StringVar(&s.quota, "quota", "", "set the pool's quota (bytes or Ki, Mi, Gi, Ti); \"0\" removes it; empty leaves it as it is")
	fs.BoolVar(&s.updateCaps, "update-caps", false, "replace the caps of an existing user that differ from the recommended ones (shown as a diff without this flag)")
	fs.BoolVar(&s.dryRun, "dry-run", false, "change nothing: print the ceph/rbd commands that would run")
	fs.BoolVar(&s.withSecret, "with-secret", false, "print the Secret with the user's key (without, a comment says how to make it)")
	fs.StringVar(&s.clusterID, "cluster-id", "", "clusterID in the cluster config and the StorageClass (default: the cluster's fsid)")
	fs.StringVar(&s.namespace, "namespace", "rbd-csi", "the driver's namespace: the ConfigMap and the Secret go there")
	fs.StringVar(&s.configMap, "configmap", "rbd-csi-config", "name of the driver's cluster-config ConfigMap (the chart's <release>-config)")
	fs.StringVar(&s.secret, "secret-name", "", "name of the Secret (default: rbd-csi-<user>)")
	fs.StringVar(&s.storageClass, "storageclass", "rbd", "name of the StorageClass")
	fs.StringVar(&s.snapshotClass, "snapshotclass", "rbd", "name of the VolumeSnapshotClass")
	fs.StringVar(&c.imageFeatures, "image-features", "layering", "imageFeatures of the StorageClass")
	fs.StringVar(&s.fsType, "fstype", "ext4", "filesystem of the StorageClass's volumes")
	fs.StringVar(&s.format, "format", "manifests", "what to print: manifests (kubectl apply -f) or helm-values (helm upgrade --values; with the chart installed, its ConfigMap is the chart's to write)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: rbd-csi setup --pool POOL --user USER [flags] > rbd-csi-ceph.yaml

Wires a Ceph cluster in for the driver: creates the pool or checks it
(initialised for rbd), sets the quota if asked, creates the cephx user with
least-privilege caps for the pool (mon 'profile rbd', osd and mgr 'profile rbd
pool=POOL'), then prints to stdout the Kubernetes YAML that uses them: the
cluster-config ConfigMap, the Secret (with --with-secret; without, how to make
it), a StorageClass and a VolumeSnapshotClass. What it did, what it left
alone and a doctor section go to stderr.

Idempotent: a second run changes nothing and says so. An existing user whose
caps differ is shown as a diff and left alone unless --update-caps. With
--dry-run nothing changes: stdout gets the equivalent ceph/rbd commands.
Exit status 3 when the doctor section finds something that would fail.

`+accessHelp+`
Flags:
`)
		fs.PrintDefaults()
	}
	if rc := parseSub(fs, args, stderr); rc >= 0 {
		return rc
	}
	o, m, err := setupOptions(c, s)
	if err == nil {
		err = c.validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	ctx, stop := signalContext()
	defer stop()
	cl, closeFn, err := c.client()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	defer closeFn()
	res, err := setup.Apply(ctx, cl, o)
	reportSetup(res, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "setup failed:", err)
		return exitError
	}
	if o.DryRun {
		for _, st := range res.Steps {
			fmt.Fprintln(stdout, st.Command)
		}
		return exitOK
	}
	if err := completeManifest(ctx, cl, &m, s.withSecret); err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	write := m.Write
	if s.format == "helm-values" {
		write = m.WriteHelmValues
	}
	if err := write(stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	fmt.Fprintln(stderr, "--- doctor")
	c.classesFromRun = []doctor.StorageClass{{Name: m.StorageClass, Parameters: map[string]string{params.KeyClusterID: m.ClusterID, params.KeyPool: m.Pool, params.KeyImageFeatures: m.Features.String()}}}
	in, err := c.doctorInput(ctx)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	return printReport(doctor.Run(ctx, cl, in), "text", stderr)
}

func setupOptions(c common, s setupFlags) (setup.Options, setup.Manifest, error) {
	o := setup.Options{Pool: c.pool, User: c.user, UpdateCaps: s.updateCaps, DryRun: s.dryRun}
	if s.quota != "" {
		o.QuotaSet = true
		if s.quota != "0" {
			n, err := quantity.Parse(s.quota)
			if err != nil {
				return o, setup.Manifest{}, fmt.Errorf("--quota: %w", err)
			}
			o.Quota = uint64(n)
		}
	}
	if err := o.Validate(); err != nil {
		return o, setup.Manifest{}, err
	}
	if s.format != "manifests" && s.format != "helm-values" {
		return o, setup.Manifest{}, fmt.Errorf("--format %q: use manifests or helm-values", s.format)
	}
	features, err := ceph.ParseFeatures(c.imageFeatures)
	if err != nil {
		return o, setup.Manifest{}, fmt.Errorf("--image-features: %w", err)
	}
	secret := s.secret
	if secret == "" {
		secret = "rbd-csi-" + strings.ToLower(strings.ReplaceAll(c.user, "_", "-"))
	}
	m := setup.Manifest{
		ClusterID: s.clusterID, Pool: c.pool, User: c.user, Namespace: s.namespace,
		ConfigMap: s.configMap, Secret: secret, StorageClass: s.storageClass, SnapshotClass: s.snapshotClass,
		Driver: c.driverName, Features: features, FsType: s.fsType,
	}
	return o, m, nil
}

// completeManifest fills in what only the cluster knows: the monitors, the
// fsid for a default clusterID and, when asked for, the user's key.
func completeManifest(ctx context.Context, cl *cephadmin.Client, m *setup.Manifest, withKey bool) error {
	mons, err := cl.MonitorAddrs(ctx)
	if err != nil {
		return err
	}
	m.Monitors = mons
	if m.ClusterID == "" {
		if m.ClusterID, err = cl.FSID(ctx); err != nil {
			return err
		}
	}
	if withKey {
		if m.Key, err = cl.UserKey(ctx, m.User); err != nil {
			return err
		}
	}
	return nil
}

// reportSetup tells the operator, on stderr, what was done or would be.
func reportSetup(res setup.Result, o setup.Options, w io.Writer) {
	for _, n := range res.Notes {
		fmt.Fprintln(w, "unchanged:", n)
	}
	if len(res.CapsDiff) > 0 {
		fmt.Fprintf(w, "caps of client.%s differ from the recommended ones:\n", o.User)
		for _, d := range res.CapsDiff {
			fmt.Fprintln(w, "  "+d)
		}
	}
	for _, st := range res.Steps {
		if st.Ran {
			fmt.Fprintln(w, "done:", st.Command)
		} else {
			fmt.Fprintln(w, "would run:", st.Command)
		}
	}
	if !res.Changed() {
		fmt.Fprintln(w, "nothing to change: the cluster is already set up")
	}
}
