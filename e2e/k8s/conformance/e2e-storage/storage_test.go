//go:build ignore

// Package rbdcsistorage is a slim e2e.test: Kubernetes' e2e framework with
// only the External Storage testsuites (storage/external, driven by
// -storage.testdriver=FILE). build-tools.sh copies it into a copy of
// k8s.io/kubernetes at test/e2e/rbdcsi-storage and builds it with go test -c;
// the ignore tag keeps it out of rbd-csi's own module.
package rbdcsistorage

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"

	// freezes the feature names before the suites use them
	_ "k8s.io/kubernetes/test/e2e/feature"
	// the External Storage [Driver: ...] suites, one per -storage.testdriver
	_ "k8s.io/kubernetes/test/e2e/storage/external"

	// the framework's optional parts, as the full e2e.test configures them
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/format"
)

func TestMain(m *testing.M) {
	showVersion := flag.CommandLine.Bool("version", false, "print the Kubernetes version the binary was built from")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %q\n", flag.CommandLine.Args())
		os.Exit(2)
	}
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

// TestE2E runs the ginkgo suite (setup of e2e.RunE2ETests: reporters, JUnit).
func TestE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
