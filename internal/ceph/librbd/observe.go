package librbd

import "time"

// observe reports one finished operation to Options.Observe: run defers it,
// so every operation is measured once, from before connecting (a slow or
// failed connect is part of what the caller waited for) to its result.
func (b *Backend) observe(op string, start time.Time, err *error) {
	if b.opts.Observe != nil {
		b.opts.Observe(op, time.Since(start), *err)
	}
}
