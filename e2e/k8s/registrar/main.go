// Command registrar is a test-only stand-in for node-driver-registrar, whose
// image cannot be fetched in the e2e environment. It takes the same flags
// the Helm chart passes to the real sidecar, so the chart's node DaemonSet
// runs unchanged with either image:
//
//  1. ask the driver at --csi-address for its name (GetPluginInfo), retrying
//     until the driver answers;
//  2. serve the kubelet plugin registration API (pluginregistration/v1) on
//     <--plugin-registration-path>/<driver name>-reg.sock, announcing the
//     driver's socket as the kubelet sees it (--kubelet-registration-path);
//  3. exit non-zero when the kubelet reports that registration failed, so
//     that the container restarts and registration is tried again.
//
// Not for production: use registry.k8s.io/sig-storage/csi-node-driver-registrar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registration struct {
	registerapi.UnimplementedRegistrationServer
	driver, endpoint string
	failed           chan string
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("kubelet asked for plugin info: %s at %s", r.driver, r.endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("kubelet registered %s", r.driver)
	} else {
		log.Printf("kubelet failed to register %s: %s", r.driver, s.Error)
		select {
		case r.failed <- s.Error:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// driverName asks the CSI driver for its name, retrying until ctx ends.
func driverName(ctx context.Context, address string, timeout time.Duration) (string, error) {
	target := address
	if !strings.HasPrefix(target, "unix:") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	client := csi.NewIdentityClient(conn)
	for {
		callCtx, cancel := context.WithTimeout(ctx, timeout)
		info, err := client.GetPluginInfo(callCtx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil && info.GetName() != "" {
			return info.GetName(), nil
		}
		log.Printf("waiting for the driver at %s: %v", address, err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func main() {
	csiAddress := flag.String("csi-address", "/csi/csi.sock", "the driver's socket inside this container")
	kubeletPath := flag.String("kubelet-registration-path", "", "the driver's socket as the kubelet sees it (required)")
	regDir := flag.String("plugin-registration-path", "/registration", "the kubelet's plugins_registry directory inside this container")
	timeout := flag.Duration("timeout", 10*time.Second, "timeout of each GetPluginInfo call")
	httpEndpoint := flag.String("http-endpoint", "", "optional host:port serving /healthz (ok while the registration socket exists)")
	flag.Int("v", 0, "log level (accepted for compatibility, ignored)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	name, err := driverName(ctx, *csiAddress, *timeout)
	if err != nil {
		log.Fatalf("no driver name: %v", err)
	}
	socket := filepath.Join(*regDir, name+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("removing stale %s: %v", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatal(err)
	}
	reg := &registration{driver: name, endpoint: *kubeletPath, failed: make(chan string, 1)}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, reg)
	go func() {
		if err := srv.Serve(lis); err != nil {
			log.Printf("registration server: %v", err)
		}
	}()
	if *httpEndpoint != "" {
		go serveHealth(*httpEndpoint, socket)
	}
	log.Printf("serving %s for driver %s (kubelet endpoint %s)", socket, name, *kubeletPath)

	code := 0
	select {
	case <-ctx.Done():
		log.Print("stopping")
	case msg := <-reg.failed:
		log.Printf("exiting after failed registration: %s", msg)
		code = 1
	}
	srv.Stop()
	_ = os.Remove(socket)
	os.Exit(code)
}

func serveHealth(addr, socket string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := os.Stat(socket); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	log.Print(http.ListenAndServe(addr, mux))
}
