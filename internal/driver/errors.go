package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/attach"
	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/kms"
	"github.com/rbd-csi/rbd-csi/internal/node/crypt"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

// errorKind maps the typed errors of the lower packages to one gRPC code,
// with an optional hint appended to the message.
type errorKind struct {
	is   []error
	code codes.Code
	hint string
}

// errorKinds is the one table from error kind to gRPC code. The first row
// that matches wins: a diagnosed krbd timeout wraps both
// ErrClusterIncompatible and ErrMapTimeout and is a precondition.
// Retryable conditions get codes the sidecars retry (Unavailable,
// DeadlineExceeded, Aborted).
var errorKinds = []errorKind{
	{is: []error{attach.ErrHeld}, code: codes.FailedPrecondition,
		hint: ": detach it there first (delete the pod using it); if that node is lost, taint it node.kubernetes.io/out-of-service=nodeshutdown:NoExecute so Kubernetes detaches it, and rbd-csi fences the node before attaching here"},
	{is: []error{attach.ErrNotAttached}, code: codes.FailedPrecondition,
		hint: "; this stage belongs to an attachment that ended: Kubernetes retries with the current one"},
	{is: []error{attach.ErrAttached}, code: codes.FailedPrecondition},
	{is: []error{attach.ErrIncompatible}, code: codes.AlreadyExists},
	{is: []error{attach.ErrUnknownNode}, code: codes.NotFound},
	{is: []error{attach.ErrContended, ceph.ErrConflict}, code: codes.Aborted, hint: "; retry later"},
	{is: []error{mapper.ErrInvalidImage, mapper.ErrInvalidOptions, mapper.ErrInvalidDevice, params.ErrInvalid, kms.ErrConfig, kms.ErrNoKEK, kms.ErrBadKEK}, code: codes.InvalidArgument},
	{is: []error{kms.ErrWrongKEK, kms.ErrWrongVolume, kms.ErrCorrupt, kms.ErrNoDEK}, code: codes.FailedPrecondition},
	{is: []error{
		mapper.ErrUnsupportedFeatures, mapper.ErrUnsupported, mapper.ErrClusterIncompatible,
		mapper.ErrDeviceBusy, mapper.ErrMappingConflict,
		mounter.ErrWrongFilesystem, mounter.ErrOnlineResizeDenied,
		crypt.ErrNoDMCrypt, crypt.ErrNotEmpty, crypt.ErrNotFormatted, crypt.ErrBusy,
	}, code: codes.FailedPrecondition},
	{is: []error{mounter.ErrUnreadable}, code: codes.Unavailable,
		hint: "; the mapping fails its reads: its Ceph client may be fenced (ceph osd blocklist ls) or the cluster unreachable; the stage is retried"},
	{is: []error{mapper.ErrImageNotFound}, code: codes.NotFound},
	{is: []error{mapper.ErrAccessDenied}, code: codes.PermissionDenied},
	{is: []error{mapper.ErrMapTimeout}, code: codes.DeadlineExceeded},
	{is: []error{context.Canceled}, code: codes.Canceled},
	{is: []error{ceph.ErrAuth}, code: codes.Unauthenticated},
	{is: []error{ceph.ErrPermission}, code: codes.PermissionDenied,
		hint: ": check the cephx caps of the user (mon 'profile rbd', osd 'profile rbd pool=<pool>', mgr 'profile rbd pool=<pool>')"},
	{is: []error{ceph.ErrTimeout, context.DeadlineExceeded}, code: codes.DeadlineExceeded},
	{is: []error{ceph.ErrUnavailable}, code: codes.Unavailable},
	{is: []error{ceph.ErrNotFound}, code: codes.NotFound},
	{is: []error{ceph.ErrExists}, code: codes.AlreadyExists},
	{is: []error{ceph.ErrInProgress}, code: codes.Aborted, hint: "; retry later"},
	{is: []error{ceph.ErrBusy}, code: codes.FailedPrecondition},
	{is: []error{ceph.ErrNoSpace}, code: codes.ResourceExhausted},
	{is: []error{ceph.ErrInvalid}, code: codes.InvalidArgument},
}

// kindOf returns the row err matches; Internal when none does.
func kindOf(err error) errorKind {
	for _, k := range errorKinds {
		for _, target := range k.is {
			if errors.Is(err, target) {
				return k
			}
		}
	}
	return errorKind{code: codes.Internal}
}

// statusOf turns an error of a lower package into the gRPC status the CSI
// spec and the sidecars expect; what names the operation and object so an
// operator can act on the message ("" when err says it all).
func statusOf(err error, what string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if what != "" {
		msg = what + ": " + msg
	}
	k := kindOf(err)
	return status.Error(k.code, msg+k.hint)
}

// lockStatus is the error for a lock not obtained before the deadline:
// Aborted tells the sidecar another operation on the volume is in flight.
func lockStatus(err error, key string) error {
	if errors.Is(err, context.Canceled) {
		return status.Errorf(codes.Canceled, "waiting for the in-flight operation on %s: %v", key, context.Canceled)
	}
	return status.Errorf(codes.Aborted, "an operation on %s is already in progress; retry later", key)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
