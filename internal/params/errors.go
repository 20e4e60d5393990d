package params

import (
	"errors"
	"fmt"
)

// ErrInvalid is matched (errors.Is) by every error this package returns:
// a parameter, a volume context or a secret the caller must fix.
var ErrInvalid = errors.New("invalid parameter")

// invalidError keeps the message it wraps unchanged.
type invalidError struct{ err error }

func (e invalidError) Error() string { return e.err.Error() }

func (e invalidError) Unwrap() error { return e.err }

// Is makes every invalidError match ErrInvalid.
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return invalidError{err: fmt.Errorf(format, args...)}
}
