package mapper

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// These tests map real images with the real kernel rbd driver. They run
// where /sys/bus/rbd exists (e2e/kernel's guest: this machine's own kernel
// has no rbd module) and a cluster is given (see needCeph).

func needKernelRBD(t *testing.T) cephEnv {
	t.Helper()
	if _, err := os.Stat("/sys/bus/rbd/add_single_major"); err != nil {
		t.Skipf("skipping real-kernel test: no krbd here (%v); make test-kernel runs it in a guest with Debian's kernel", err)
	}
	return needCeph(t)
}

// journalingImage creates an image with the journaling feature, which no
// kernel rbd driver supports (the seed's StorageClass).
func journalingImage(t *testing.T, e cephEnv) Image {
	t.Helper()
	img := e.image("krbd-journal-" + strings.ReplaceAll(t.Name(), "/", "-"))
	img.Features = ceph.FeatureLayering | ceph.FeatureExclusiveLock | ceph.FeatureJournaling
	e.rbd(t, "create", "--size", "64M", "--image-feature", img.Features.String(), img.Spec())
	t.Cleanup(func() { e.removeImage(t, img.Spec()) })
	return img
}

func realKRBDConfig(sysfs string) Config {
	return Config{SysfsRoot: sysfs, DevRoot: "/dev", KernelLog: KmsgLog{}, Resolver: net.DefaultResolver}
}

// With supported_features published (kernel >= 4.11), the map is refused
// before the kernel sees it: the error quotes the kernel's mask.
func TestRealKRBDRefusesJournalingBeforeTheMap(t *testing.T) {
	e := needKernelRBD(t)
	img := journalingImage(t, e)
	m, err := New(KRBD, realKRBDConfig("/sys"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Map(ctxTimeout(t, 2*time.Minute), img, MapOptions{})
	checkJournalingRefusal(t, img, err)
	if !strings.Contains(err.Error(), "kernel supported_features=0x") {
		t.Errorf("error does not come from the check before the map (no supported_features in it): %v", err)
	}
	checkNotMapped(t, img)
}

// Without supported_features (kernels before 4.11), the kernel decides: the
// add write fails with ENXIO and the kernel logs "image uses unsupported
// features: 0x40"; the error must decode that into the same advice. The
// sysfs root here is the real one minus supported_features.
func TestRealKRBDExplainsTheKernelsRefusalOfJournaling(t *testing.T) {
	e := needKernelRBD(t)
	img := journalingImage(t, e)
	sysfs := t.TempDir()
	bus := filepath.Join(sysfs, "bus", "rbd")
	if err := os.MkdirAll(bus, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"add_single_major", "remove_single_major", "devices"} {
		if err := os.Symlink(filepath.Join("/sys/bus/rbd", f), filepath.Join(bus, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/sys/block", filepath.Join(sysfs, "block")); err != nil {
		t.Fatal(err)
	}
	m, err := New(KRBD, realKRBDConfig(sysfs))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Map(ctxTimeout(t, 2*time.Minute), img, MapOptions{})
	checkJournalingRefusal(t, img, err)
	if !strings.Contains(err.Error(), "unsupported features: 0x40") {
		t.Errorf("error does not quote the kernel's log line: %v", err)
	}
	checkNotMapped(t, img)
}

func checkJournalingRefusal(t *testing.T, img Image, err error) {
	t.Helper()
	if !errors.Is(err, ErrUnsupportedFeatures) {
		t.Fatalf("Map of a journaling image: %v; want ErrUnsupportedFeatures", err)
	}
	for _, want := range []string{"journaling", "rbd feature disable " + img.Spec() + " journaling", "imageFeatures=layering", "mounter: rbd-nbd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), img.Key) {
		t.Error("the error contains the key")
	}
}

func checkNotMapped(t *testing.T, img Image) {
	t.Helper()
	k := newKRBD(realKRBDConfig("/sys"))
	if id, found, err := k.findDevice(img); err != nil || found {
		t.Errorf("after the refusal: rbd device %q maps %s (err %v), want none", id, img.Spec(), err)
	}
}

// The kernel's add write returns only once the device is registered: the
// mapper relies on it (a retry after a timed-out map finds the device
// instead of adding the image twice), and the fake kernel is built to
// match.
func TestRealKRBDDeviceExistsWhenTheAddWriteReturns(t *testing.T) {
	e := needKernelRBD(t)
	img := e.image("krbd-sync-add")
	e.rbd(t, "create", "--size", "64M", "--image-feature", "layering", img.Spec())
	t.Cleanup(func() { e.removeImage(t, img.Spec()) })
	k := newKRBD(realKRBDConfig("/sys"))
	req := buildAddRequest(e.mons, img, nil, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := k.writeAdd(ctx, img, req); err != nil {
		t.Fatalf("add: %v", err)
	}
	id, found, err := k.findDevice(img)
	if err != nil || !found {
		t.Fatalf("no device right after the add write returned (err %v)", err)
	}
	if err := k.Unmap(ctx, Device{Mapper: KRBD, Path: k.devPath(id), Attrs: map[string]string{AttrDevID: id, AttrPool: img.Pool, AttrImage: img.Name}}); err != nil {
		t.Fatal(err)
	}
}
