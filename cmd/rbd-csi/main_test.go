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

func TestDurationFlags(t *testing.T) {
	nbd := func(c config) time.Duration { return c.nbdReattach }
	release := func(c config) time.Duration { return c.releaseAfter }
	for _, tc := range []struct {
		name string
		flag string
		get  func(config) time.Duration
		args []string
		want time.Duration
		err  bool
	}{
		{name: "nbd reattach: the default is the mapper's", flag: "--nbd-reattach-timeout", get: nbd, want: mapper.DefaultNBDReattachTimeout},
		{name: "nbd reattach: a value is taken as given", flag: "--nbd-reattach-timeout", get: nbd, args: []string{"--nbd-reattach-timeout=90s"}, want: 90 * time.Second},
		{name: "nbd reattach: zero is refused, not read as the default", flag: "--nbd-reattach-timeout", get: nbd, args: []string{"--nbd-reattach-timeout=0s"}, err: true},
		{name: "nbd reattach: a negative value is refused", flag: "--nbd-reattach-timeout", get: nbd, args: []string{"--nbd-reattach-timeout=-5s"}, err: true},
		{name: "memory release: on by default", flag: "--release-memory-after", get: release, want: defaultReleaseAfter},
		{name: "memory release: a value is taken as given", flag: "--release-memory-after", get: release, args: []string{"--release-memory-after=30s"}, want: 30 * time.Second},
		{name: "memory release: zero turns it off", flag: "--release-memory-after", get: release, args: []string{"--release-memory-after=0"}, want: 0},
		{name: "memory release: a negative value is refused", flag: "--release-memory-after", get: release, args: []string{"--release-memory-after=-1s"}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("rbd-csi", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got, err := parseFlags(fs, tc.args)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want an error: %t", err, tc.err)
			}
			if err == nil && tc.get(got) != tc.want {
				t.Fatalf("%s %v, want %v", tc.flag, tc.get(got), tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.flag) {
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
