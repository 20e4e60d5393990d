// Package blockingcall bounds system calls that the kernel may block in
// without end and that no signal interrupts: mount(2) on a device that
// does not answer, an open through a FUSE daemon that hangs, a loop
// device's setup over such a file.
package blockingcall

import (
	"context"
	"fmt"
)

// Run runs call and returns its error, or gives up at ctx's end with an
// error wrapping ctx.Err(). A call given up on is left running in its
// goroutine until the kernel returns; callers must make their retries find
// and accept what it may still do (a mount made, a device attached).
func Run(ctx context.Context, call func() error) error {
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("still waiting for the kernel: %w", ctx.Err())
	}
}
