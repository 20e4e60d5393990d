package driver

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// DefaultMaxCloneDepth bounds how many ancestors an image the driver makes
// may read through. Every snapshot and every restore or clone adds one, and
// each level costs reads a lookup more; at the bound the new image is
// flattened (its own copy of the data, no parent) before it is handed out.
const DefaultMaxCloneDepth = 8

// flattenTimeout bounds one flatten the driver runs itself (no mgr): a
// flatten copies every object of the image, so it may take long.
const flattenTimeout = 2 * time.Hour

// MaxLocalFlattens bounds the flattens the controller runs itself at once
// (when no ceph-mgr takes them). Each copies a whole image; many at once
// would saturate the cluster and the controller. An image over the bound is
// not queued: the next call that needs it (CreateVolume and CreateSnapshot
// retry while they answer "being flattened") starts it once a slot is free.
const MaxLocalFlattens = 4

// flattener runs flattens: queued as ceph-mgr tasks (rbd_support persists
// them and retries them across mgr restarts) where a mgr is active,
// otherwise in the driver's background, one goroutine per image, at most
// limit at once. Callers learn the outcome by looking at the image again: a
// flattened image has no parent.
type flattener struct {
	backend ceph.Backend
	limit   int
	mu      sync.Mutex
	running map[string]bool // local flattens by image
}

func newFlattener(b ceph.Backend) *flattener {
	return &flattener{backend: b, limit: MaxLocalFlattens, running: map[string]bool{}}
}

// Pending reports the local flattens running, for the metrics.
func (f *flattener) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.running)
}

// start makes sure a flatten of ref is under way. Starting one that is
// already running is harmless: the mgr finds its existing task, and a
// local flatten is not started twice.
func (f *flattener) start(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef) error {
	key := ref.Cluster.Key() + "|" + ref.String()
	f.mu.Lock()
	busy := f.running[key]
	f.mu.Unlock()
	if busy {
		return nil
	}
	if handToManager(ctx, "flatten", func(ctx context.Context) error {
		return f.backend.FlattenImage(ctx, creds, ref, true)
	}, "image", ref) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[key] {
		return nil
	}
	if len(f.running) >= f.limit {
		klog.V(2).InfoS("Local flattens at their bound; this one starts on a later call", "image", ref, "running", len(f.running), "bound", f.limit)
		return nil
	}
	f.running[key] = true
	go f.run(key, creds, ref)
	return nil
}

func (f *flattener) run(key string, creds ceph.Credentials, ref ceph.ImageRef) {
	defer func() {
		f.mu.Lock()
		delete(f.running, key)
		f.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), flattenTimeout)
	defer cancel()
	start := time.Now()
	if err := f.backend.FlattenImage(ctx, creds, ref, false); err != nil {
		klog.ErrorS(err, "Flatten failed; the next call that needs the image starts it again", "image", ref)
		return
	}
	klog.InfoS("Flatten done", "image", ref, "duration", time.Since(start))
}

func (d *controllerService) maxCloneDepth() int {
	if d.opts.MaxCloneDepth > 0 {
		return d.opts.MaxCloneDepth
	}
	return DefaultMaxCloneDepth
}

// settleDepth reports whether ref reads through no more ancestors than the
// bound allows. When it reads through more, it makes sure a flatten is
// under way and reports false; callers answer "not ready" (CreateSnapshot)
// or a retryable error (CreateVolume) until the flatten is done. info, when
// given, saves the walk for an image without a parent.
func (d *controllerService) settleDepth(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef, info *ceph.ImageInfo) (bool, error) {
	if info != nil && info.Parent == nil {
		return true, nil
	}
	depth, err := d.opts.Backend.CloneDepth(ctx, creds, ref)
	if err != nil {
		return false, statusOf(err, "measure clone depth of "+ref.String())
	}
	return d.withinBound(ctx, creds, ref, depth)
}

// withinBound is settleDepth for an image whose depth the caller knows.
func (d *controllerService) withinBound(ctx context.Context, creds ceph.Credentials, ref ceph.ImageRef, depth int) (bool, error) {
	if depth <= d.maxCloneDepth() {
		return true, nil
	}
	klog.V(4).InfoS("Clone chain over the bound: flattening", "image", ref, "depth", depth, "bound", d.maxCloneDepth())
	return false, d.flattener.start(ctx, creds, ref)
}
