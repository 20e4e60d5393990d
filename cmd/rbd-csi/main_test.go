package main

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

func TestMetricsAddressIsOffByDefaultAndTakenAsGiven(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"off by default", nil, ""},
		{"host and port", []string{"--metrics-address=0.0.0.0:9090"}, "0.0.0.0:9090"},
		{"loopback only", []string{"--metrics-address", "127.0.0.1:8080"}, "127.0.0.1:8080"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
			got, err := parseFlags(fs, c.args)
			if err != nil {
				t.Fatal(err)
			}
			if got.metricsAddr != c.want {
				t.Fatalf("metrics address %q, want %q", got.metricsAddr, c.want)
			}
		})
	}
}

func TestHelpDocumentsTheMetricsAddress(t *testing.T) {
	fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	if _, err := parseFlags(fs, []string{"--help"}); err != flag.ErrHelp {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"-metrics-address", "/metrics", "/readyz", "off when empty"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestNBDReattachTimeoutFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration
		err  bool
	}{
		{name: "the default is the mapper's", want: mapper.DefaultNBDReattachTimeout},
		{name: "a value is taken as given", args: []string{"--nbd-reattach-timeout=90s"}, want: 90 * time.Second},
		{name: "zero is refused, not read as the default", args: []string{"--nbd-reattach-timeout=0s"}, err: true},
		{name: "a negative value is refused", args: []string{"--nbd-reattach-timeout=-5s"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, tc.args)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want an error: %t", err, tc.err)
			}
			if err == nil && got.nbdReattach != tc.want {
				t.Fatalf("timeout %v, want %v", got.nbdReattach, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "--nbd-reattach-timeout") {
				t.Fatalf("%q does not name the flag", err)
			}
		})
	}
}

func TestReleaseMemoryAfterFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration
		err  bool
	}{
		{name: "on by default", want: defaultReleaseAfter},
		{name: "a value is taken as given", args: []string{"--release-memory-after=30s"}, want: 30 * time.Second},
		{name: "zero turns it off", args: []string{"--release-memory-after=0"}, want: 0},
		{name: "a negative value is refused", args: []string{"--release-memory-after=-1s"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, tc.args)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want an error: %t", err, tc.err)
			}
			if err == nil && got.releaseAfter != tc.want {
				t.Fatalf("release after %v, want %v", got.releaseAfter, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "--release-memory-after") {
				t.Fatalf("%q does not name the flag", err)
			}
		})
	}
}

// recordingObserver remembers the methods it was told of.
type recordingObserver struct{ methods []string }

func (r *recordingObserver) ObserveRPC(method, _ string, _ time.Duration) {
	r.methods = append(r.methods, method)
}

func TestObserversTellEveryMemberOfEveryCall(t *testing.T) {
	a, b := &recordingObserver{}, &recordingObserver{}
	o := append(observers{a}, observersOf(b)...)
	o.ObserveRPC("/csi.v1.Node/NodeStageVolume", "OK", time.Millisecond)
	if len(a.methods) != 1 || len(b.methods) != 1 {
		t.Fatalf("members told %v and %v, want one call each", a.methods, b.methods)
	}
	if len(observersOf(nil)) != 0 {
		t.Fatal("observersOf(nil) has a member: the driver would call a nil observer")
	}
}

func TestOnlyControllerAndNodeCallsCountAsWorkForTheMemoryRelease(t *testing.T) {
	for method, want := range map[string]bool{
		"/csi.v1.Identity/Probe":                       false,
		"/csi.v1.Identity/GetPluginInfo":               false,
		"/csi.v1.Controller/CreateVolume":              true,
		"/csi.v1.Controller/DeleteVolume":              true,
		"/csi.v1.Node/NodeStageVolume":                 true,
		"/csi.v1.Node/NodeGetVolumeStats":              true,
		"/csi.v1.Controller/ControllerGetCapabilities": true,
	} {
		if got := countsAsWork(method); got != want {
			t.Errorf("countsAsWork(%s) = %t, want %t", method, got, want)
		}
	}
}
