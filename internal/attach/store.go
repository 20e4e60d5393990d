package attach

import (
	"context"
	"errors"
	"fmt"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// Store reads and updates the records of one cluster user.
type Store struct {
	Backend ceph.AttachBackend
	Creds   ceph.Credentials
}

// maxAttempts bounds the compare-and-swap retries of one update: each
// conflict means another writer made progress, so a handful suffices.
const maxAttempts = 16

// Load returns the image's record (an empty one when it has none) and the
// stored bytes' header a swap must compare (nil when none is stored).
func (s Store) Load(ctx context.Context, ref ceph.ImageRef) (Record, []byte, error) {
	data, err := s.Backend.ReadAttachRecord(ctx, s.Creds, ref)
	if errors.Is(err, ceph.ErrNotFound) {
		return Record{Claims: map[string]Claim{}}, nil, nil
	}
	if err != nil {
		return Record{}, nil, err
	}
	r, err := Decode(data)
	if err != nil {
		return Record{}, nil, fmt.Errorf("attachment record of %s: %w", ref, err)
	}
	return r, r.header(), nil
}

// Update applies change to the image's record until a compare-and-swap
// stores its result. change returns the record to store and whether it
// differs; it may run several times and must not have side effects.
func (s Store) Update(ctx context.Context, ref ceph.ImageRef, change func(Record) (next Record, changed bool, err error)) (Record, error) {
	for range maxAttempts {
		cur, prev, err := s.Load(ctx, ref)
		if err != nil {
			return Record{}, err
		}
		next, changed, err := change(cur)
		if err != nil || !changed {
			return next, err
		}
		err = s.Backend.SwapAttachRecord(ctx, s.Creds, ref, prev, next.Encode())
		if err == nil {
			return next, nil
		}
		// A conflict means another writer made progress: read again.
		if !errors.Is(err, ceph.ErrConflict) && !errors.Is(err, ceph.ErrExists) {
			return Record{}, err
		}
	}
	return Record{}, fmt.Errorf("%w: %s after %d attempts", ErrContended, ref, maxAttempts)
}

// Drop removes the image's record when it holds no claim; ErrAttached
// naming the nodes when it does. Nothing stored is success.
func (s Store) Drop(ctx context.Context, ref ceph.ImageRef) error {
	for range maxAttempts {
		cur, prev, err := s.Load(ctx, ref)
		if err != nil || prev == nil {
			return err
		}
		if len(cur.Claims) > 0 {
			return fmt.Errorf("%w to node(s) %q", ErrAttached, cur.Nodes())
		}
		err = s.Backend.SwapAttachRecord(ctx, s.Creds, ref, prev, nil)
		if err == nil || errors.Is(err, ceph.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, ceph.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: %s after %d attempts", ErrContended, ref, maxAttempts)
}
