package driver

import (
	"context"
	"sync"
)

// keyLocks serialises operations on one volume (by request name or ID)
// within this process. Waiting honours the caller's context, so a stuck
// operation cannot make later calls hang past their deadline.
type keyLocks struct {
	mu    sync.Mutex
	slots map[string]*lockSlot
}

type lockSlot struct {
	ch      chan struct{} // holds one token while locked
	waiters int
}

func newKeyLocks() *keyLocks { return &keyLocks{slots: map[string]*lockSlot{}} }

// lock returns an unlock function, or ctx's error when the lock was not
// obtained in time.
func (l *keyLocks) lock(ctx context.Context, key string) (func(), error) {
	l.mu.Lock()
	s, ok := l.slots[key]
	if !ok {
		s = &lockSlot{ch: make(chan struct{}, 1)}
		l.slots[key] = s
	}
	s.waiters++
	l.mu.Unlock()

	select {
	case s.ch <- struct{}{}:
		return func() { l.unlock(key, s) }, nil
	case <-ctx.Done():
		l.drop(key, s)
		return nil, ctx.Err()
	}
}

func (l *keyLocks) unlock(key string, s *lockSlot) {
	<-s.ch
	l.drop(key, s)
}

func (l *keyLocks) drop(key string, s *lockSlot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.waiters--
	if s.waiters == 0 {
		delete(l.slots, key)
	}
}

// held reports how many keys have holders or waiters (for tests).
func (l *keyLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.slots)
}
