package keylock

import (
	"context"
	"errors"
	"testing"
	"time"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestLockHonoursContextAndLeaksNothing(t *testing.T) {
	var l Locks
	unlock, err := l.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(ctxTimeout(t, 50*time.Millisecond), "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Lock = %v, want DeadlineExceeded", err)
	}
	other, err := l.Lock(ctxTimeout(t, time.Second), "b")
	if err != nil {
		t.Fatalf("Lock of another key blocked: %v", err)
	}
	other()
	unlock()
	unlock() // idempotent
	again, err := l.Lock(ctxTimeout(t, time.Second), "a")
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	again()
	if n := l.Held(); n != 0 {
		t.Errorf("Held() = %d after every unlock, want 0", n)
	}
}

func TestLockCanceledWaiterReportsCanceled(t *testing.T) {
	var l Locks
	unlock, err := l.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Lock(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a canceled context = %v, want Canceled", err)
	}
	if n := l.Held(); n != 1 {
		t.Fatalf("Held() = %d with one holder, want 1", n)
	}
}

// A free lock is taken even when the caller's context has already ended:
// a random choice between the two would make a retry after a timeout
// flaky (TestKRBDRetryAfterTimeoutReusesLateMapping failed that way).
func TestLockTakesAFreeLockWhateverTheContext(t *testing.T) {
	var l Locks
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 200; i++ {
		unlock, err := l.Lock(ctx, "a")
		if err != nil {
			t.Fatalf("attempt %d: Lock of a free key with an ended context = %v, want it taken", i, err)
		}
		unlock()
	}
}
