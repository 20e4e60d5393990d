package librbd

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

// errno extracts the (positive) errno from a go-ceph error, 0 if none.
func errno(err error) int {
	var coded interface{ ErrorCode() int }
	if errors.As(err, &coded) {
		n := coded.ErrorCode()
		if n < 0 {
			n = -n
		}
		return n
	}
	if errors.Is(err, rados.ErrNotFound) || errors.Is(err, rbd.ErrNotFound) {
		return int(syscall.ENOENT)
	}
	return 0
}

// classify wraps err with the ceph sentinel that matches its errno, keeping
// the original text for the operator.
func classify(err error) error {
	if err == nil {
		return nil
	}
	sentinel := sentinelFor(syscall.Errno(errno(err)))
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %v", sentinel, err)
}

func sentinelFor(e syscall.Errno) error {
	switch e {
	case syscall.ENOENT:
		return ceph.ErrNotFound
	case syscall.EEXIST:
		return ceph.ErrExists
	case syscall.EPERM, syscall.EACCES:
		return ceph.ErrPermission
	case syscall.ETIMEDOUT:
		return ceph.ErrTimeout
	case syscall.ESHUTDOWN, syscall.ENOTCONN, syscall.ECONNREFUSED, syscall.EHOSTUNREACH:
		return ceph.ErrUnavailable
	case syscall.EBUSY, syscall.ENOTEMPTY:
		return ceph.ErrBusy
	case syscall.ENOSPC, syscall.EDQUOT:
		return ceph.ErrNoSpace
	case syscall.EINVAL, syscall.ERANGE:
		return ceph.ErrInvalid
	}
	return nil
}

// classifyConnect explains connection failures: a refused key and an
// unreachable cluster are the two an operator meets most.
func classifyConnect(err error, user string, mons []string) error {
	switch syscall.Errno(errno(err)) {
	case syscall.EPERM, syscall.EACCES:
		return fmt.Errorf("%w for client.%s: the cluster rejected the key; check the Secret's key against `ceph auth get-key client.%s`", ceph.ErrAuth, user, user)
	case syscall.ETIMEDOUT, syscall.ESHUTDOWN, syscall.ENOTCONN, syscall.ECONNREFUSED, syscall.EHOSTUNREACH:
		return fmt.Errorf("%w: no monitor answered at %s within the client mount timeout: %v", ceph.ErrUnavailable, strings.Join(mons, ","), err)
	case syscall.ENOENT, syscall.EINVAL:
		return fmt.Errorf("%w: bad monitor address %q or user: %v", ceph.ErrInvalid, strings.Join(mons, ","), err)
	}
	return classify(err)
}
