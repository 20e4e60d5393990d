package driver

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// cephStatus turns a backend error into the gRPC status the CSI spec and the
// sidecars expect. Retryable conditions get codes the sidecars retry
// (Unavailable, DeadlineExceeded, Aborted); the message keeps the operation
// and object so an operator can act on it.
func cephStatus(err error, what string) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, ceph.ErrAuth):
		return status.Error(codes.Unauthenticated, msg)
	case errors.Is(err, ceph.ErrPermission):
		return status.Error(codes.PermissionDenied, msg+": check the cephx caps of the user (mon 'profile rbd', osd 'profile rbd pool=<pool>', mgr 'profile rbd pool=<pool>')")
	case errors.Is(err, ceph.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	case errors.Is(err, ceph.ErrUnavailable):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, ceph.ErrNotFound):
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, ceph.ErrExists):
		return status.Error(codes.AlreadyExists, msg)
	case errors.Is(err, ceph.ErrInProgress):
		return status.Error(codes.Aborted, msg+"; retry later")
	case errors.Is(err, ceph.ErrBusy):
		return status.Error(codes.FailedPrecondition, msg)
	case errors.Is(err, ceph.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, ceph.ErrInvalid):
		return status.Error(codes.InvalidArgument, msg)
	}
	return status.Error(codes.Internal, msg)
}

// lockStatus is the error for a lock not obtained before the deadline:
// Aborted tells the sidecar another operation on the volume is in flight.
func lockStatus(err error, key string) error {
	if errors.Is(err, context.Canceled) {
		return status.Errorf(codes.Canceled, "waiting for the in-flight operation on %s: %v", key, err)
	}
	return status.Errorf(codes.Aborted, "an operation on %s is already in progress; retry later", key)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
