package mapper

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
)

// Sentinel errors. Every error this package returns wraps one of them (test
// with errors.Is) and carries a message that says what went wrong and what
// an operator can do about it. GRPCCode maps them to CSI status codes.
var (
	// ErrInvalidImage: the Image is malformed (empty or unsafe names, bad
	// monitor address, user or key). gRPC InvalidArgument.
	ErrInvalidImage = errors.New("invalid image reference")
	// ErrInvalidOptions: MapOptions.Extra or the mapper name is not
	// acceptable. gRPC InvalidArgument.
	ErrInvalidOptions = errors.New("invalid map options")
	// ErrInvalidDevice: a Device handed to Unmap/Check does not come from
	// this mapper or its attributes are malformed. gRPC InvalidArgument.
	ErrInvalidDevice = errors.New("invalid device")
	// ErrUnsupportedFeatures: the image has features this node's kernel
	// cannot map. gRPC FailedPrecondition.
	ErrUnsupportedFeatures = errors.New("image features not supported by this mapper")
	// ErrUnsupported: this mapper cannot work on this node or for this
	// image (no krbd/nbd in the kernel, rados namespace with rbd-fuse).
	// gRPC FailedPrecondition.
	ErrUnsupported = errors.New("operation not supported by this mapper on this node")
	// ErrClusterIncompatible: the cluster requires protocol features
	// (usually CRUSH tunables) the kernel lacks. gRPC FailedPrecondition.
	ErrClusterIncompatible = errors.New("cluster requires features the kernel client lacks")
	// ErrMapTimeout: mapping did not finish before the deadline. gRPC
	// DeadlineExceeded (the CO retries; a late kernel map is picked up).
	ErrMapTimeout = errors.New("timed out mapping image")
	// ErrImageNotFound: the image does not exist. gRPC NotFound.
	ErrImageNotFound = errors.New("image not found")
	// ErrAccessDenied: the cluster refused the credentials. gRPC
	// PermissionDenied.
	ErrAccessDenied = errors.New("access denied by the cluster")
	// ErrDeviceBusy: the device is still mounted or held open, so it was
	// not unmapped. gRPC FailedPrecondition.
	ErrDeviceBusy = errors.New("device is busy")
	// ErrMappingConflict: the image is already mapped on this node in an
	// incompatible way (read-write vs read-only). gRPC FailedPrecondition.
	ErrMappingConflict = errors.New("image already mapped differently")
	// ErrMapFailed and ErrUnmapFailed: any other failure. gRPC Internal.
	ErrMapFailed   = errors.New("map failed")
	ErrUnmapFailed = errors.New("unmap failed")
)

// GRPCCode maps an error from this package to the gRPC status code a CSI
// node service should return. Unknown errors map to Internal; nil to OK.
func GRPCCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	// Order matters: a diagnosed timeout (e.g. CRUSH tunables) wraps both
	// ErrClusterIncompatible and ErrMapTimeout and is a precondition.
	switch {
	case errors.Is(err, ErrInvalidImage), errors.Is(err, ErrInvalidOptions), errors.Is(err, ErrInvalidDevice):
		return codes.InvalidArgument
	case errors.Is(err, ErrUnsupportedFeatures), errors.Is(err, ErrUnsupported),
		errors.Is(err, ErrClusterIncompatible), errors.Is(err, ErrDeviceBusy),
		errors.Is(err, ErrMappingConflict):
		return codes.FailedPrecondition
	case errors.Is(err, ErrImageNotFound):
		return codes.NotFound
	case errors.Is(err, ErrAccessDenied):
		return codes.PermissionDenied
	case errors.Is(err, ErrMapTimeout), errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	default:
		return codes.Internal
	}
}
