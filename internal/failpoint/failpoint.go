// Package failpoint lets crash tests kill the driver at chosen instructions.
// Points are armed only through the RBD_CSI_FAILPOINTS environment variable
// (comma-separated names), which production deployments never set; an
// unarmed point costs one map lookup on a nil map.
package failpoint

import (
	"os"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
)

// EnvVar arms failpoints: RBD_CSI_FAILPOINTS=create-after-image,...
const EnvVar = "RBD_CSI_FAILPOINTS"

var armed = parse(os.Getenv(EnvVar))

func parse(s string) map[string]bool {
	if s == "" {
		return nil
	}
	m := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		m[strings.TrimSpace(n)] = true
	}
	return m
}

// Crash kills the process with SIGKILL, as the OOM killer or a node failure
// would, when the named point is armed. Nothing runs after it: no deferred
// call, no flush.
func Crash(name string) {
	if !armed[name] {
		return
	}
	klog.InfoS("Failpoint hit: killing the process", "failpoint", name)
	klog.Flush()
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
