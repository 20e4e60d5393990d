// Package keylock serialises operations per key (a volume, an image) within
// one process. Waiting honours the caller's context, so a stuck operation
// cannot make later calls hang past their deadline.
package keylock

import (
	"context"
	"fmt"
	"sync"
)

// Locks is a set of per-key locks; the zero value is ready to use.
type Locks struct {
	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	ch      chan struct{} // holds one token while locked
	waiters int
}

// Lock takes the lock for key and returns its unlock function, which may be
// called more than once. When ctx ends first, the error wraps ctx.Err(). A
// free lock is always taken, even with ctx already ended: select would pick
// at random between the two, and the caller's next step reports the
// deadline anyway.
func (l *Locks) Lock(ctx context.Context, key string) (unlock func(), err error) {
	s := l.join(key)
	select {
	case s.ch <- struct{}{}:
	default:
		select {
		case s.ch <- struct{}{}:
		case <-ctx.Done():
			l.leave(key, s)
			return nil, fmt.Errorf("waiting for another operation on %s: %w", key, ctx.Err())
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-s.ch
			l.leave(key, s)
		})
	}, nil
}

// Held reports how many keys have holders or waiters.
func (l *Locks) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.slots)
}

func (l *Locks) join(key string) *slot {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.slots == nil {
		l.slots = map[string]*slot{}
	}
	s, ok := l.slots[key]
	if !ok {
		s = &slot{ch: make(chan struct{}, 1)}
		l.slots[key] = s
	}
	s.waiters++
	return s
}

func (l *Locks) leave(key string, s *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.waiters--
	if s.waiters == 0 {
		delete(l.slots, key)
	}
}
