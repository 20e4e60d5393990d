package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
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
