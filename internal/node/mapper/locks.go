package mapper

import (
	"context"
	"fmt"
	"sync"
)

// keyedMutex serialises operations per image within one process, with
// context-aware waiting so a stuck operation cannot hold up callers past
// their deadline.
type keyedMutex struct {
	mu      sync.Mutex
	entries map[string]*keyedEntry
}

type keyedEntry struct {
	sem  chan struct{}
	refs int
}

// Lock takes the lock for key or fails when ctx ends first. A free lock
// is always taken: select would pick at random between a free lock and an
// expired ctx, and the caller's next step reports the deadline anyway.
func (k *keyedMutex) Lock(ctx context.Context, key string) (unlock func(), err error) {
	e := k.acquireEntry(key)
	select {
	case e.sem <- struct{}{}:
	default:
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			k.releaseEntry(key, e)
			return nil, fmt.Errorf("waiting for another operation on %s: %w", key, ctx.Err())
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.sem
			k.releaseEntry(key, e)
		})
	}, nil
}

func (k *keyedMutex) acquireEntry(key string) *keyedEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.entries == nil {
		k.entries = map[string]*keyedEntry{}
	}
	e, ok := k.entries[key]
	if !ok {
		e = &keyedEntry{sem: make(chan struct{}, 1)}
		k.entries[key] = e
	}
	e.refs++
	return e
}

func (k *keyedMutex) releaseEntry(key string, e *keyedEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.entries, key)
	}
}
