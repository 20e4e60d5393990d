package driver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/ceph/cephfake"
)

// blockingFlattens is a cluster without a mgr whose local flattens run
// until released, counting how many run at once.
type blockingFlattens struct {
	*cephfake.Backend
	release chan struct{}
	mu      sync.Mutex
	now     int
	most    int
	done    map[string]bool
}

func (b *blockingFlattens) FlattenImage(_ context.Context, _ ceph.Credentials, ref ceph.ImageRef, async bool) error {
	if async {
		return &ceph.OpError{Op: "flatten", Target: ref.String(), Err: ceph.ErrNoManager}
	}
	b.mu.Lock()
	b.now++
	b.most = max(b.most, b.now)
	b.mu.Unlock()
	<-b.release
	b.mu.Lock()
	b.now--
	b.done[ref.Name] = true
	b.mu.Unlock()
	return nil
}

func (b *blockingFlattens) stats() (most, done int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.most, len(b.done)
}

func (b *blockingFlattens) isDone(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done[name]
}

func TestLocalFlattensAreBoundedAndTheRestStartOnALaterCall(t *testing.T) {
	b := &blockingFlattens{Backend: cephfake.New("admin", testKey, testPool), release: make(chan struct{}), done: map[string]bool{}}
	f := newFlattener(b)
	f.limit = 3
	refs := make([]ceph.ImageRef, 10)
	for i := range refs {
		refs[i] = ceph.ImageRef{Pool: testPool, Name: fmt.Sprintf("img-%d", i)}
	}
	start := func() {
		for _, ref := range refs {
			if b.isDone(ref.Name) {
				continue // flattened: the image has no parent any more
			}
			if err := f.start(context.Background(), ceph.Credentials{User: "admin", Key: testKey}, ref); err != nil {
				t.Fatal(err)
			}
		}
	}
	start()
	if n := f.Pending(); n != 3 {
		t.Fatalf("%d local flattens running, want the bound 3", n)
	}
	// Release them one by one; each round of calls fills the freed slot.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, done := b.stats()
		if done == len(refs) {
			break
		}
		running := f.Pending()
		if running == 0 {
			t.Fatalf("%d of %d flattens done and none running: the rest never started", done, len(refs))
		}
		b.release <- struct{}{}
		for f.Pending() == running { // the released one leaves the set
			if time.Now().After(deadline) {
				t.Fatal("a released flatten never finished")
			}
			time.Sleep(time.Millisecond)
		}
		start()
	}
	if most, _ := b.stats(); most > 3 {
		t.Fatalf("%d flattens ran at once, bound 3", most)
	}
}
