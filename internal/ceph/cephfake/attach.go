package cephfake

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// ReadAttachRecord implements ceph.AttachBackend.
func (b *Backend) ReadAttachRecord(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "read-attach", cr, ref); err != nil {
		return nil, err
	}
	rec, ok := b.records[key(ref)]
	if !ok {
		return nil, notFound("read attachment record of", ref)
	}
	return slices.Clone(rec), nil
}

// SwapAttachRecord implements ceph.AttachBackend.
func (b *Backend) SwapAttachRecord(ctx context.Context, cr ceph.Credentials, ref ceph.ImageRef, prev, next []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "swap-attach", cr, ref); err != nil {
		return err
	}
	if b.records == nil {
		b.records = map[string][]byte{}
	}
	cur, ok := b.records[key(ref)]
	switch {
	case prev == nil && ok:
		return &ceph.OpError{Op: "write attachment record of", Target: ref.String(), Err: ceph.ErrExists}
	case prev != nil && (!ok || !bytes.HasPrefix(cur, prev)):
		return &ceph.OpError{Op: "write attachment record of", Target: ref.String(), Err: ceph.ErrConflict}
	}
	if next == nil {
		delete(b.records, key(ref))
		return nil
	}
	b.records[key(ref)] = slices.Clone(next)
	return nil
}

// Blocklist implements ceph.AttachBackend: the client's watches go, as
// the OSDs drop a blocklisted client's watches.
func (b *Backend) Blocklist(ctx context.Context, cr ceph.Credentials, cl ceph.Cluster, addr string, expiry time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(ctx, "blocklist", cr, ceph.ImageRef{Cluster: cl}); err != nil {
		return err
	}
	if expiry <= 0 {
		return &ceph.OpError{Op: "blocklist", Target: addr, Err: fmt.Errorf("expiry %v: %w", expiry, ceph.ErrInvalid)}
	}
	if b.blocklist == nil {
		b.blocklist = map[string]time.Duration{}
	}
	b.blocklist[addr] = expiry
	for k, ws := range b.watchers {
		b.watchers[k] = slices.DeleteFunc(slices.Clone(ws), func(w ceph.Watcher) bool { return w.Addr == addr })
	}
	return nil
}

// Blocklisted lists the addresses blocklisted so far, sorted.
func (b *Backend) Blocklisted() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.blocklist))
	for a := range b.blocklist {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// AttachRecord returns the image's attachment record, nil when none.
func (b *Backend) AttachRecord(ref ceph.ImageRef) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.records[key(ref)])
}
