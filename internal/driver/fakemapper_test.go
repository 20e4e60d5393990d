package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
)

// fakeMapper is an in-memory mapper.Mapper. A "device" is a regular file of
// devSize bytes (so mounter.DeviceSize can measure it) whose path follows from the
// image, as a kernel mapping would be found again after a restart. Like the
// contract asks, an Unmap of a Device that names only the image finds the
// mapping by its attributes.
type fakeMapper struct {
	name    string
	dir     string
	devSize int64

	mu       sync.Mutex
	mapped   map[string]bool // image spec -> read-only
	images   []mapper.Image
	opts     []mapper.MapOptions
	unmapped []mapper.Device
	mapErr   error
	unmapErr error
	sick     string // Check reports unhealthy with this message when set
	// onMap, when set, runs after a successful Map (another node mapping
	// the same image at that moment, say).
	onMap func(img mapper.Image)
	// ignoreProceed maps without asking MapOptions.Proceed (a mapper
	// breaking its contract).
	ignoreProceed bool
	// unmapBusy Unmap calls fail with ErrDeviceBusy before one succeeds
	// (udev's probe holding a device mapped a moment ago).
	unmapBusy int
}

func newFakeMapper(t *testing.T, dir string) *fakeMapper {
	t.Helper()
	return &fakeMapper{name: "fake", dir: dir, devSize: 8 << 20, mapped: map[string]bool{}}
}

func (f *fakeMapper) Name() string { return f.name }

func (f *fakeMapper) devicePath(img mapper.Image) string {
	return filepath.Join(f.dir, "dev-"+strings.ReplaceAll(img.Spec(), "/", "_"))
}

func (f *fakeMapper) Map(_ context.Context, img mapper.Image, opts mapper.MapOptions) (mapper.Device, error) {
	// As the real mappers do, ask before touching the image; a Map that
	// the caller stops here does not count as one.
	if opts.Proceed != nil && !f.ignoreProceed {
		if err := opts.Proceed(); err != nil {
			return mapper.Device{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images = append(f.images, img)
	f.opts = append(f.opts, opts)
	if f.mapErr != nil {
		return mapper.Device{}, f.mapErr
	}
	if ro, ok := f.mapped[img.Spec()]; ok && ro != opts.ReadOnly {
		return mapper.Device{}, fmt.Errorf("%w: %s is mapped with read-only=%v", mapper.ErrMappingConflict, img.Spec(), ro)
	}
	path := f.devicePath(img)
	if _, err := os.Stat(path); err != nil {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			return mapper.Device{}, err
		}
		if err := os.Truncate(path, f.devSize); err != nil {
			return mapper.Device{}, err
		}
	}
	f.mapped[img.Spec()] = opts.ReadOnly
	if f.onMap != nil {
		f.onMap(img)
	}
	return mapper.Device{Path: path, Mapper: f.name, Attrs: map[string]string{
		mapper.AttrPool: img.Pool, mapper.AttrNamespace: img.RadosNamespace, mapper.AttrImage: img.Name,
	}}, nil
}

func (f *fakeMapper) Unmap(_ context.Context, dev mapper.Device) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unmapped = append(f.unmapped, dev)
	if f.unmapErr != nil {
		return f.unmapErr
	}
	if f.unmapBusy > 0 {
		f.unmapBusy--
		return fmt.Errorf("%w: %s is held open", mapper.ErrDeviceBusy, dev.Path)
	}
	img := mapper.Image{Pool: dev.Attrs[mapper.AttrPool], RadosNamespace: dev.Attrs[mapper.AttrNamespace], Name: dev.Attrs[mapper.AttrImage]}
	delete(f.mapped, img.Spec())
	return nil
}

func (f *fakeMapper) Check(_ context.Context, dev mapper.Device) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := mapper.Image{Pool: dev.Attrs[mapper.AttrPool], RadosNamespace: dev.Attrs[mapper.AttrNamespace], Name: dev.Attrs[mapper.AttrImage]}
	if _, ok := f.mapped[img.Spec()]; !ok {
		return false, img.Spec() + " is not mapped"
	}
	return f.sick == "", f.sick
}

func (f *fakeMapper) mapCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.images)
}

func (f *fakeMapper) unmapCalls() []mapper.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mapper.Device(nil), f.unmapped...)
}

func (f *fakeMapper) isMapped(spec string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mapped[spec]
	return ok
}

func (f *fakeMapper) mappedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mapped)
}

// refreshingMapper adds Refresh, which grows the device file to grow bytes
// (a loop device picking up the new image size) and notes how many
// filesystem resizes had happened by then.
type refreshingMapper struct {
	*fakeMapper
	mnt           *mounter.Fake
	grow          int64
	err           error
	refreshed     int
	resizedBefore int
}

func (r *refreshingMapper) Refresh(_ context.Context, dev mapper.Device) error {
	r.refreshed++
	r.resizedBefore = r.mnt.Resized
	if r.err != nil {
		return r.err
	}
	return os.Truncate(dev.Path, r.grow)
}
