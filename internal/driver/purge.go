package driver

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// purger removes trashed images. It first hands each to the ceph-mgr
// (rbd_support trash-remove task), which persists the task and survives a
// driver restart; when no mgr takes it, the purger removes the image itself
// in the background. Pending work is visible with `rbd trash ls POOL` and
// `ceph rbd task list`.
type purger struct {
	backend ceph.Backend
	queue   chan purgeJob
	wg      sync.WaitGroup
	once    sync.Once
	done    chan struct{}
	// pending holds queued, running and blocked local purges.
	mu      sync.Mutex
	pending map[string]bool
	// retryAfter spaces the attempts at an image that still has snapshots
	// (clones read through it): it is removed once the last one is gone.
	retryAfter time.Duration
}

type purgeJob struct {
	creds   ceph.Credentials
	cluster ceph.Cluster
	pool    string
	id      string
	name    string
}

func (j purgeJob) key() string { return j.cluster.Key() + "|" + j.pool + "|" + j.id }

// purgeTimeout bounds one local purge of a (possibly huge) image.
const purgeTimeout = 30 * time.Minute

// scheduleTimeout bounds handing a purge to the mgr inside the RPC.
const scheduleTimeout = 5 * time.Second

// blockedRetry is how long a local purge waits before trying again an image
// that clones still read through (the mgr's own retries start at 30 s).
const blockedRetry = 30 * time.Second

func newPurger(b ceph.Backend) *purger {
	return &purger{backend: b, queue: make(chan purgeJob, 1024), done: make(chan struct{}), pending: map[string]bool{}, retryAfter: blockedRetry}
}

func (p *purger) start() {
	p.wg.Add(1)
	go p.loop()
}

func (p *purger) stop() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

// schedule hands the purge to the mgr, or queues a local one. The image is
// already in the trash, so DeleteVolume has succeeded either way; a failure
// here leaves an entry that the next DeleteVolume of the same volume, or an
// operator, finishes.
func (p *purger) schedule(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, pool, id, name string) {
	handed := handToManager(ctx, "trash purge", func(ctx context.Context) error {
		return p.backend.PurgeTrash(ctx, cr, cl, pool, id, true)
	}, "pool", pool, "image", name, "id", id)
	if !handed {
		p.enqueue(purgeJob{creds: cr, cluster: cl, pool: pool, id: id, name: name})
	}
}

// handToManager asks the ceph-mgr, within scheduleTimeout, to run a task
// (rbd_support persists and retries it). It reports false when the caller
// must run the work itself: no mgr, or one that did not take it.
func handToManager(ctx context.Context, what string, hand func(context.Context) error, kv ...any) bool {
	sctx, cancel := context.WithTimeout(ctx, scheduleTimeout)
	defer cancel()
	err := hand(sctx)
	if err == nil {
		klog.V(4).InfoS("Handed to ceph-mgr: "+what, kv...)
		return true
	}
	if !errors.Is(err, ceph.ErrNoManager) {
		klog.InfoS("ceph-mgr did not take the "+what+"; running it in the driver", append(kv, "error", err)...)
	}
	return false
}

func (p *purger) enqueue(job purgeJob) {
	p.mu.Lock()
	if p.pending[job.key()] {
		p.mu.Unlock()
		return
	}
	p.pending[job.key()] = true
	p.mu.Unlock()
	select {
	case p.queue <- job:
	default:
		p.finish(job)
		klog.InfoS("Purge queue full; trash entry left for the next delete or an operator", "pool", job.pool, "id", job.id)
	}
}

func (p *purger) finish(job purgeJob) {
	p.mu.Lock()
	delete(p.pending, job.key())
	p.mu.Unlock()
}

// Pending reports the number of local purges queued, running, or waiting
// to try again an image that clones still read through.
func (p *purger) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

func (p *purger) loop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case job := <-p.queue:
			p.purge(job)
		}
	}
}

func (p *purger) purge(job purgeJob) {
	ctx, cancel := context.WithTimeout(context.Background(), purgeTimeout)
	defer cancel()
	start := time.Now()
	err := p.backend.PurgeTrash(ctx, job.creds, job.cluster, job.pool, job.id, false)
	if errors.Is(err, ceph.ErrBusy) {
		// Snapshots or clones still depend on the image: librbd refuses,
		// and the purge waits for them in the driver's memory, still
		// counted as pending. A restart forgets it: the entry then waits
		// for `rbd trash purge POOL` (with a ceph-mgr, the mgr retries its
		// task by itself).
		klog.V(4).InfoS("Trashed image still has dependents; purging later", "pool", job.pool, "image", job.name, "retry", p.retryAfter)
		p.retryLater(job)
		return
	}
	p.finish(job)
	if err != nil && !errors.Is(err, ceph.ErrNotFound) {
		klog.ErrorS(err, "Trash purge failed; the entry stays in the trash", "pool", job.pool, "image", job.name, "id", job.id)
		return
	}
	klog.V(4).InfoS("Trash purge done", "pool", job.pool, "image", job.name, "duration", time.Since(start))
}

// retryLater queues a blocked job again after retryAfter; it stays pending
// meanwhile, unless the purger stops first.
func (p *purger) retryLater(job purgeJob) {
	time.AfterFunc(p.retryAfter, func() {
		select {
		case <-p.done: // stopped: nobody would take it
			p.finish(job)
			return
		default:
		}
		select {
		case p.queue <- job:
		default:
			p.finish(job)
			klog.InfoS("Purge queue full; trash entry left for the next delete or an operator", "pool", job.pool, "id", job.id)
		}
	})
}
