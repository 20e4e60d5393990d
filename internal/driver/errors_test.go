package driver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
	"github.com/rbd-csi/rbd-csi/internal/node/mapper"
	"github.com/rbd-csi/rbd-csi/internal/node/mounter"
	"github.com/rbd-csi/rbd-csi/internal/params"
)

func TestStatusOfMapsEveryErrorKindToItsCode(t *testing.T) {
	_, paramErr := params.ParseVolume(map[string]string{"pool": "p"})
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"mapper invalid image", mapper.ErrInvalidImage, codes.InvalidArgument, "op: wrapped: invalid image reference"},
		{"mapper invalid options", mapper.ErrInvalidOptions, codes.InvalidArgument, "op: wrapped: invalid map options"},
		{"mapper invalid device", mapper.ErrInvalidDevice, codes.InvalidArgument, "op: wrapped: invalid device"},
		{"params invalid", paramErr, codes.InvalidArgument, "op: wrapped: parameter clusterID (or the legacy monitors) is required"},
		{"mapper unsupported features", mapper.ErrUnsupportedFeatures, codes.FailedPrecondition, ""},
		{"mapper unsupported", mapper.ErrUnsupported, codes.FailedPrecondition, ""},
		{"mapper cluster incompatible", mapper.ErrClusterIncompatible, codes.FailedPrecondition, ""},
		{"diagnosed timeout is a precondition", fmt.Errorf("%w: %w", mapper.ErrClusterIncompatible, mapper.ErrMapTimeout), codes.FailedPrecondition, ""},
		{"mapper device busy", mapper.ErrDeviceBusy, codes.FailedPrecondition, ""},
		{"mapper mapping conflict", mapper.ErrMappingConflict, codes.FailedPrecondition, ""},
		{"mounter wrong filesystem", mounter.ErrWrongFilesystem, codes.FailedPrecondition, ""},
		{"mounter online resize denied", mounter.ErrOnlineResizeDenied, codes.FailedPrecondition, ""},
		{"mounter unreadable device is retried", mounter.ErrUnreadable, codes.Unavailable, ""},
		{"mapper image not found", mapper.ErrImageNotFound, codes.NotFound, ""},
		{"mapper access denied", mapper.ErrAccessDenied, codes.PermissionDenied, ""},
		{"mapper map timeout", mapper.ErrMapTimeout, codes.DeadlineExceeded, ""},
		{"mapper map failed", mapper.ErrMapFailed, codes.Internal, ""},
		{"mapper unmap failed", mapper.ErrUnmapFailed, codes.Internal, ""},
		{"canceled", context.Canceled, codes.Canceled, ""},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, ""},
		{"ceph auth", ceph.ErrAuth, codes.Unauthenticated, ""},
		{"ceph permission names the caps", ceph.ErrPermission, codes.PermissionDenied, "check the cephx caps"},
		{"ceph timeout", ceph.ErrTimeout, codes.DeadlineExceeded, ""},
		{"ceph unavailable", ceph.ErrUnavailable, codes.Unavailable, ""},
		{"ceph not found", ceph.ErrNotFound, codes.NotFound, ""},
		{"ceph exists", ceph.ErrExists, codes.AlreadyExists, ""},
		{"ceph in progress says retry", ceph.ErrInProgress, codes.Aborted, "; retry later"},
		{"ceph busy", ceph.ErrBusy, codes.FailedPrecondition, ""},
		{"ceph no space", ceph.ErrNoSpace, codes.ResourceExhausted, ""},
		{"ceph invalid", ceph.ErrInvalid, codes.InvalidArgument, ""},
		{"unknown error is internal", errors.New("surprise"), codes.Internal, "op: wrapped: surprise"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := statusOf(fmt.Errorf("wrapped: %w", tc.err), "op")
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestStatusOfNilIsNil(t *testing.T) {
	if err := statusOf(nil, "op"); err != nil {
		t.Fatalf("statusOf(nil) = %v", err)
	}
}

func TestStatusOfWithoutWhatKeepsTheMessage(t *testing.T) {
	err := statusOf(fmt.Errorf("%w: pool %q", ceph.ErrNotFound, "p"), "")
	if got := status.Convert(err).Message(); got != `not found: pool "p"` {
		t.Fatalf("message %q", got)
	}
}
