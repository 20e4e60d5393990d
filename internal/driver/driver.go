// Package driver serves the CSI Identity, Controller and Node services over
// gRPC. The handlers stay thin: parameters are validated by package params,
// IDs by package volid, and every Ceph operation goes through the
// ceph.Backend interface so that the same handlers run against go-ceph in
// production and against an in-memory fake in unit tests.
package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/clusterconfig"
	"github.com/rbd-csi/rbd-csi/internal/keylock"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/version"
)

// Mode selects which CSI services the process serves.
type Mode string

// Modes.
const (
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	ModeAll        Mode = "all"
)

// ParseMode validates a --mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeController, ModeNode, ModeAll:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: want controller, node or all", s)
}

// DefaultName is the driver name used when --drivername is not given.
const DefaultName = "rbd.csi.dev"

// Options configure a Driver.
type Options struct {
	Name       string
	NodeID     string
	Mode       Mode
	InstanceID string
	Clusters   *clusterconfig.Config
	Backend    ceph.Backend
	// SecretsDir optionally holds, per clusterID, a directory with userID
	// and userKey files (a mounted Kubernetes Secret). It serves the calls
	// that carry no secrets: GetCapacity and ListVolumes, and on a node the
	// start-up re-attach of rbd-nbd devices.
	SecretsDir string
	// Node holds the node plugin's settings; ignored in controller mode.
	Node NodeOptions
	// MaxCloneDepth bounds clone chains (0 = DefaultMaxCloneDepth).
	MaxCloneDepth int
	// Observer, when set, is told the outcome of every CSI call (metrics).
	Observer RPCObserver
	// KMS is the KMS configuration encryptionKMSID names entries of (nil:
	// only the built-in Secret-KEK default).
	KMS *kms.Config
}

// RPCObserver receives the method, status code name and duration of every
// answered CSI call. It is an interface so that this package does not
// depend on the metrics implementation.
type RPCObserver interface {
	ObserveRPC(fullMethod, code string, d time.Duration)
}

// Driver is the CSI plugin: the identity service, and the controller and
// node services its mode asks for.
type Driver struct {
	csi.UnimplementedIdentityServer
	*shared
	controller *controllerService // nil in node mode
	node       *nodeService       // nil in controller mode
}

// shared is what every service uses.
type shared struct {
	opts  Options
	locks *keylock.Locks
}

// controllerService serves csi.ControllerServer.
type controllerService struct {
	csi.UnimplementedControllerServer
	*shared
	usedPools *knownPools // pools and the credentials last used for them
	// recordedUsers caches the users owner records name, for ListVolumes.
	recordedUsers *userCache
	walk          walkCache // the listing a ListVolumes walk pages through
	purger        *purger
	flattener     *flattener
	// partialWait: see defaultPartialWait (a field so tests can shorten it).
	partialWait time.Duration
}

func newControllerService(sh *shared) *controllerService {
	return &controllerService{
		shared: sh, usedPools: newKnownPools(), recordedUsers: newUserCache(), partialWait: defaultPartialWait,
		purger: newPurger(sh.opts.Backend), flattener: newFlattener(sh.opts.Backend),
	}
}

// New validates opts and builds a Driver.
func New(opts Options) (*Driver, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if err := validateDriverName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Mode == "" {
		opts.Mode = ModeAll
	}
	if opts.Clusters == nil {
		opts.Clusters, _ = clusterconfig.Parse([]byte("[]"))
	}
	if opts.KMS == nil {
		opts.KMS = &kms.Config{}
	}
	if opts.Backend == nil {
		return nil, errors.New("a Ceph backend is required")
	}
	if opts.Mode != ModeController && opts.NodeID == "" {
		return nil, errors.New("node mode needs --nodeid")
	}
	d := &Driver{shared: &shared{opts: opts, locks: &keylock.Locks{}}}
	if opts.Mode != ModeNode {
		d.controller = newControllerService(d.shared)
	}
	if opts.Mode != ModeController {
		ns, err := newNodeService(d.shared)
		if err != nil {
			return nil, err
		}
		d.node = ns
	}
	return d, nil
}

// Controller returns the controller service, or nil in node mode.
func (d *Driver) Controller() csi.ControllerServer {
	if d.controller == nil {
		return nil
	}
	return d.controller
}

// Node returns the node service, or nil in controller mode.
func (d *Driver) Node() csi.NodeServer {
	if d.node == nil {
		return nil
	}
	return d.node
}

// validateDriverName applies the CSI rule: at most 63 characters, beginning
// and ending with an alphanumeric, with '-', '_' and '.' between.
func validateDriverName(n string) error {
	ok := len(n) <= 63 && n != ""
	for i, r := range n {
		alnum := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		inner := r == '-' || r == '_' || r == '.'
		if !alnum && (!inner || i == 0 || i == len(n)-1) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("driver name %q: at most 63 characters, alphanumerics with '-', '_' or '.' inside", n)
	}
	return nil
}

// Server is a running gRPC endpoint.
type Server struct {
	grpc     *grpc.Server
	lis      net.Listener
	wg       sync.WaitGroup
	d        *Driver
	reattach *reattachPass // nil without a node service
}

// Serve listens on endpoint (unix:///path, unix:/path or a bare path) and
// serves the services of the driver's mode until Stop.
func (d *Driver) Serve(endpoint string) (*Server, error) {
	path, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("endpoint directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(d.interceptRPC))
	csi.RegisterIdentityServer(srv, d)
	if d.controller != nil {
		csi.RegisterControllerServer(srv, d.controller)
		d.controller.purger.start()
	}
	s := &Server{grpc: srv, lis: lis, d: d}
	if d.node != nil {
		csi.RegisterNodeServer(srv, d.node)
		// Before serving: it locks the volumes it will look at.
		s.reattach = d.node.startReattach()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(lis); err != nil {
			klog.ErrorS(err, "gRPC server stopped")
		}
	}()
	klog.InfoS("Serving CSI", "driver", d.opts.Name, "version", version.Version, "mode", d.opts.Mode, "endpoint", path)
	return s, nil
}

// Stop ends the server after in-flight calls finish (bounded by grace).
func (s *Server) Stop(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.grpc.Stop()
	}
	s.wg.Wait()
	if s.reattach != nil {
		s.reattach.stop()
	}
	if s.d.controller != nil {
		s.d.controller.purger.stop()
	}
}

// ParseEndpoint accepts unix:///path, unix:/path, unix://path and a bare path.
func ParseEndpoint(ep string) (string, error) {
	if !strings.Contains(ep, ":") {
		if ep == "" {
			return "", errors.New("endpoint is empty")
		}
		return ep, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", ep, err)
	}
	if u.Scheme != "unix" {
		return "", fmt.Errorf("endpoint %q: only unix sockets are served (unix:///path)", ep)
	}
	path := u.Path
	if u.Host != "" {
		path = filepath.Join(u.Host, u.Path)
	}
	if path == "" {
		path = u.Opaque
	}
	if path == "" {
		return "", fmt.Errorf("endpoint %q has no path", ep)
	}
	return path, nil
}

// interceptRPC wraps every call: one log line with its outcome, and the
// observer (metrics) told of it. Requests are logged only at high verbosity
// and always through protosanitizer, so secrets never reach the log.
func (d *Driver) interceptRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	id := nextRequestID()
	if klog.V(5).Enabled() {
		klog.InfoS("RPC request", "id", id, "method", info.FullMethod, "request", sanitize(req))
	}
	resp, err := handler(ctx, req)
	took := time.Since(start)
	logOutcome(id, info.FullMethod, req, resp, err, took)
	if d.opts.Observer != nil {
		d.opts.Observer.ObserveRPC(info.FullMethod, status.Code(err).String(), took)
	}
	return resp, err
}

// PurgeQueueLength reports the local trash purges queued or running (0 in
// node mode, which purges nothing), for the metrics.
func (d *Driver) PurgeQueueLength() int {
	if d.controller == nil {
		return 0
	}
	return d.controller.purger.Pending()
}

// FlattenQueueLength reports the background clone flattens queued or
// running (0 in node mode), for the metrics.
func (d *Driver) FlattenQueueLength() int {
	if d.controller == nil {
		return 0
	}
	return d.controller.flattener.Pending()
}
