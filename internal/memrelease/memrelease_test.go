package memrelease

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// counting returns a Releaser with a short quiet spell whose releases are
// counted instead of done.
func counting(quiet time.Duration) (*Releaser, *atomic.Int32) {
	var n atomic.Int32
	r := New(quiet)
	r.release = func() { n.Add(1) }
	return r, &n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReleasesOnceAfterAQuietSpellThatFollowedWork(t *testing.T) {
	r, released := counting(5 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	r.Worked()
	waitFor(t, "a release after the work", func() bool { return released.Load() == 1 })
	time.Sleep(50 * time.Millisecond) // ten more quiet spells
	if got := released.Load(); got != 1 {
		t.Fatalf("%d releases while idle after one burst, want 1", got)
	}
	r.Worked()
	waitFor(t, "a release after the second burst", func() bool { return released.Load() == 2 })
}

func TestNeverReleasesWithoutWork(t *testing.T) {
	r, released := counting(2 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r.Run(ctx) // returns when ctx ends
	if got := released.Load(); got != 0 {
		t.Fatalf("%d releases in an idle process, want 0", got)
	}
}

func TestWaitsWhileWorkGoesOn(t *testing.T) {
	r, released := counting(50 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	// Work every 2 ms for 300 ms: no spell of 50 ms is quiet.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		r.Worked()
	}
	if got := released.Load(); got != 0 {
		t.Fatalf("%d releases during continuous work, want 0", got)
	}
	waitFor(t, "a release once the work stopped", func() bool { return released.Load() == 1 })
}

// The real release must be callable at any time, from any goroutine,
// beside allocation in others (librados allocates in its own threads).
func TestTheRealReleaseRunsBesideAllocation(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var keep [][]byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			keep = append(keep, make([]byte, 64<<10))
			if len(keep) > 64 {
				keep = keep[:0]
			}
		}
	}()
	for range 5 {
		releaseAll()
	}
	close(stop)
	<-done
}
