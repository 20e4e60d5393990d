package ceph

import (
	"context"
	"errors"
	"time"
)

// ErrConflict: a compare-and-swap found the stored value changed since it
// was read; the caller reads it again and redecides.
var ErrConflict = errors.New("changed concurrently")

// AttachBackend stores each image's attachment record (which nodes a volume
// is published to) in a RADOS object beside the image, and fences clients.
// The record's content is opaque here: its owner, package attach, puts a
// version that every write increases at its start, which is what the
// compare-and-swap compares.
type AttachBackend interface {
	// ReadAttachRecord returns the image's record; ErrNotFound when it has
	// none.
	ReadAttachRecord(ctx context.Context, cr Credentials, ref ImageRef) ([]byte, error)
	// SwapAttachRecord replaces the record with next if the stored record
	// still begins with prev, atomically against every other client.
	// A nil prev creates the record and fails with ErrExists when there is
	// one; a nil next removes it. ErrConflict when the stored record does
	// not begin with prev (or is gone).
	SwapAttachRecord(ctx context.Context, cr Credentials, ref ImageRef, prev, next []byte) error
	// Blocklist makes the OSDs refuse the client at addr (as a watcher
	// reports it: ip:port/nonce) for expiry: `ceph osd blocklist add`.
	Blocklist(ctx context.Context, cr Credentials, cluster Cluster, addr string, expiry time.Duration) error
}
