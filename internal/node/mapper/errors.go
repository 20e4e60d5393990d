package mapper

import "errors"

// Sentinel errors. Every error this package returns wraps one of them (test
// with errors.Is) and carries a message that says what went wrong and what
// an operator can do about it; the driver decides what each means to a CO.
var (
	// ErrInvalidImage: the Image is malformed (empty or unsafe names, bad
	// monitor address, user or key).
	ErrInvalidImage = errors.New("invalid image reference")
	// ErrInvalidOptions: MapOptions.Extra or the mapper name is not
	// acceptable.
	ErrInvalidOptions = errors.New("invalid map options")
	// ErrInvalidDevice: a Device handed to Unmap/Check does not come from
	// this mapper or its attributes are malformed.
	ErrInvalidDevice = errors.New("invalid device")
	// ErrUnsupportedFeatures: the image has features this node's kernel
	// cannot map.
	ErrUnsupportedFeatures = errors.New("image features not supported by this mapper")
	// ErrUnsupported: this mapper cannot work on this node or for this
	// image (no krbd/nbd in the kernel, rados namespace with rbd-fuse).
	ErrUnsupported = errors.New("operation not supported by this mapper on this node")
	// ErrClusterIncompatible: the cluster requires protocol features
	// (usually CRUSH tunables) the kernel lacks.
	ErrClusterIncompatible = errors.New("cluster requires features the kernel client lacks")
	// ErrMapTimeout: mapping did not finish before the deadline (a retry
	// picks up a late kernel map).
	ErrMapTimeout = errors.New("timed out mapping image")
	// ErrImageNotFound: the image does not exist.
	ErrImageNotFound = errors.New("image not found")
	// ErrAccessDenied: the cluster refused the credentials.
	ErrAccessDenied = errors.New("access denied by the cluster")
	// ErrDeviceBusy: the device is still mounted or held open, so it was
	// not unmapped.
	ErrDeviceBusy = errors.New("device is busy")
	// ErrMappingConflict: the image is already mapped on this node in an
	// incompatible way (read-write vs read-only).
	ErrMappingConflict = errors.New("image already mapped differently")
	// ErrMapFailed and ErrUnmapFailed: any other failure.
	ErrMapFailed   = errors.New("map failed")
	ErrUnmapFailed = errors.New("unmap failed")
)
