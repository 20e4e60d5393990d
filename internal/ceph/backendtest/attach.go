package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// attachRecordLifecycle: the record needs no image (it is a RADOS object
// beside it), so the test uses a name no image has.
func (c *contract) attachRecordLifecycle(t *testing.T) {
	ref := c.ref("attach-record")
	t.Cleanup(func() { c.dropRecord(ref) })
	ctx := c.ctx(t)
	_, err := c.Backend.ReadAttachRecord(ctx, c.Creds, ref)
	wantErr(t, "ReadAttachRecord of no record", err, ceph.ErrNotFound)
	wantErr(t, "swap of no record", c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v1"), []byte("v2")), ceph.ErrConflict)

	if err := c.Backend.SwapAttachRecord(ctx, c.Creds, ref, nil, []byte("v1 first")); err != nil {
		t.Fatalf("create record: %v", err)
	}
	wantErr(t, "second create", c.Backend.SwapAttachRecord(ctx, c.Creds, ref, nil, []byte("v1 other")), ceph.ErrExists)
	wantErr(t, "swap from a stale value", c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v0"), []byte("v2")), ceph.ErrConflict)
	if err := c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v1"), []byte("v2 longer second value")); err != nil {
		t.Fatalf("swap from the stored prefix: %v", err)
	}
	// A shorter value replaces a longer one whole.
	if err := c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v2"), []byte("v3")); err != nil {
		t.Fatalf("swap to a shorter value: %v", err)
	}
	got, err := c.Backend.ReadAttachRecord(ctx, c.Creds, ref)
	if err != nil || !bytes.Equal(got, []byte("v3")) {
		t.Fatalf("ReadAttachRecord = %q, %v; want \"v3\"", got, err)
	}
	if err := c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v3"), nil); err != nil {
		t.Fatalf("remove record: %v", err)
	}
	_, err = c.Backend.ReadAttachRecord(ctx, c.Creds, ref)
	wantErr(t, "ReadAttachRecord after removal", err, ceph.ErrNotFound)
}

// attachRecordSwapsRace: of many clients swapping from the same value at
// once, exactly one wins; the others see ErrConflict.
func (c *contract) attachRecordSwapsRace(t *testing.T) {
	ref := c.ref("attach-race")
	t.Cleanup(func() { c.dropRecord(ref) })
	ctx := c.ctx(t)
	if err := c.Backend.SwapAttachRecord(ctx, c.Creds, ref, nil, []byte("v1")); err != nil {
		t.Fatalf("create record: %v", err)
	}
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			errs[i] = c.Backend.SwapAttachRecord(ctx, c.Creds, ref, []byte("v1"), fmt.Appendf(nil, "v2 by %d", i))
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ceph.ErrConflict):
			t.Errorf("racer %d: %v, want success or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d racers replaced the record, want exactly 1", won, racers)
	}
}

// blocklistUnusedAddress: blocklisting an address nobody uses succeeds.
func (c *contract) blocklistUnusedAddress(t *testing.T) {
	// 127.0.0.254 with a nonce of this test: no client of any cluster.
	addr := fmt.Sprintf("127.0.0.254:0/%d", time.Now().UnixNano()%1e9)
	if err := c.Backend.Blocklist(c.ctx(t), c.Creds, c.Cluster, addr, time.Minute); err != nil {
		t.Fatalf("Blocklist %s: %v", addr, err)
	}
}

// dropRecord removes a test's record, best effort.
func (c *contract) dropRecord(ref ceph.ImageRef) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if rec, err := c.Backend.ReadAttachRecord(ctx, c.Creds, ref); err == nil {
		_ = c.Backend.SwapAttachRecord(ctx, c.Creds, ref, rec, nil)
	}
}
