package harness

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
)

// MapperEnv names the environment variable that picks the mapper of the
// node end-to-end tests (e2e/node, e2e/sanity, the node chaos scenario).
const MapperEnv = "RBDCSI_E2E_MAPPER"

// Mapper returns the mapper the node tests stage with: $RBDCSI_E2E_MAPPER,
// or fuse, the one mapper that works without kernel modules (this
// machine's kernel has none). e2e/kernel runs the same tests with krbd and
// rbd-nbd in a guest running a stock kernel.
func Mapper(t testing.TB) string {
	t.Helper()
	m := os.Getenv(MapperEnv)
	if m == "" {
		return mapper.Fuse
	}
	if !slices.Contains(mapper.Names(), m) {
		t.Fatalf("%s=%q: want one of %s", MapperEnv, m, strings.Join(mapper.Names(), ", "))
	}
	return m
}

// KernelMappings lists the kernel block devices that still map image (any
// image when it is ""): krbd devices (/sys/bus/rbd/devices) and rbd-nbd
// processes naming it.
// Tests use it to prove an unstage left nothing behind with the kernel
// mappers, whose devices live outside the test's directory.
func KernelMappings(image string) []string {
	var out []string
	devs, _ := filepath.Glob("/sys/bus/rbd/devices/*")
	for _, d := range devs {
		name, err := os.ReadFile(filepath.Join(d, "name"))
		if got := strings.TrimSpace(string(name)); err == nil && (image == "" || got == image) {
			out = append(out, "krbd device /dev/rbd"+filepath.Base(d)+" maps "+got)
		}
	}
	for _, p := range mapperProcs("rbd-nbd") {
		if image == "" || slices.ContainsFunc(p.args, func(a string) bool { return strings.HasSuffix(a, "/"+image) }) {
			out = append(out, "process "+p.pid+": "+strings.Join(p.args, " "))
		}
	}
	return out
}
