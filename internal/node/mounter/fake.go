package mounter

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
)

// Fake is an in-memory Interface for unit tests. Devices are formatted by
// recording their filesystem; mount points must exist on disk, as for the
// real thing.
type Fake struct {
	mu      sync.Mutex
	mounts  map[string]fakeMount
	formats map[string]string
	// Formatted counts mkfs runs.
	Formatted int
	// BlankFormats counts the FormatAndMount calls told the device is
	// blank (no probe).
	BlankFormats int
	// Resized counts filesystem grows.
	Resized int
	// FailMount makes Mount and FormatAndMount fail when set.
	FailMount error
}

type fakeMount struct {
	source string
	opts   []string
}

var _ Interface = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{mounts: map[string]fakeMount{}, formats: map[string]string{}} }

// SetFormat pretends dev holds fstype.
func (f *Fake) SetFormat(dev, fstype string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.formats[dev] = fstype
}

// Mounted lists current mount points.
func (f *Fake) Mounted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for t := range f.mounts {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// FormatAndMount implements Interface.
func (f *Fake) FormatAndMount(ctx context.Context, dev, target, fstype string, opts []string, blank bool) error {
	f.mu.Lock()
	found := f.formats[dev]
	if blank && found != "" {
		f.mu.Unlock()
		return fmt.Errorf("%s was said to be blank, but it holds %q: formatting would have destroyed it", dev, found)
	}
	if blank {
		f.BlankFormats++
	}
	if found != "" && found != fstype {
		f.mu.Unlock()
		return fmt.Errorf("%w: %s holds %q", ErrWrongFilesystem, dev, found)
	}
	if found == "" {
		f.formats[dev] = fstype
		f.Formatted++
	}
	f.mu.Unlock()
	return f.Mount(ctx, dev, target, fstype, opts)
}

// Format implements Interface.
func (f *Fake) Format(_ context.Context, dev string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.formats[dev], nil
}

// Mount implements Interface.
func (f *Fake) Mount(_ context.Context, source, target, _ string, opts []string) error {
	if f.FailMount != nil {
		return f.FailMount
	}
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("mount point %s: %w", target, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts[target] = fakeMount{source: source, opts: slices.Clone(opts)}
	return nil
}

// Unmount implements Interface.
func (f *Fake) Unmount(_ context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, target)
	return nil
}

// IsMountPoint implements Interface.
func (f *Fake) IsMountPoint(target string) (bool, error) {
	if _, err := os.Stat(target); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mounts[target]
	return ok, nil
}

// MountInfo implements Interface.
func (f *Fake) MountInfo(target string) (string, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.mounts[target]
	if !ok {
		return "", nil, fmt.Errorf("%s is not mounted", target)
	}
	return m.source, m.opts, nil
}

// Resize implements Interface.
func (f *Fake) Resize(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Resized++
	return nil
}
