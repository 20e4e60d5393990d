package driver

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

var requestSeq atomic.Uint64

func nextRequestID() uint64 { return requestSeq.Add(1) }

// sanitize renders a request with every field marked csi_secret replaced.
func sanitize(msg any) fmt.Stringer { return protosanitizer.StripSecrets(msg) }

// volumeIDer matches every CSI request that names a volume.
type volumeIDer interface{ GetVolumeId() string }

type namer interface{ GetName() string }

// createdVolume matches CreateVolumeResponse.
type createdVolume interface{ GetVolume() *csi.Volume }

// logOutcome writes the one line per call that the default verbosity shows:
// request ID, method, code, duration, the volume (or the requested name),
// and the error message, which never holds a secret.
func logOutcome(id uint64, method string, req, resp any, err error, d time.Duration) {
	kv := []any{"id", id, "method", method, "code", status.Code(err).String(), "duration", d.Round(time.Microsecond)}
	if v, ok := req.(volumeIDer); ok && v.GetVolumeId() != "" {
		kv = append(kv, "volume", v.GetVolumeId())
	} else if n, ok := req.(namer); ok && n.GetName() != "" {
		kv = append(kv, "name", n.GetName())
	}
	if err != nil {
		kv = append(kv, "error", status.Convert(err).Message())
		klog.InfoS("RPC failed", kv...)
		return
	}
	if v, ok := resp.(createdVolume); ok && v.GetVolume().GetVolumeId() != "" {
		// CreateVolume names the volume only in its answer; logging the ID
		// lets one grep follow a volume from its creation on.
		kv = append(kv, "volume", v.GetVolume().GetVolumeId())
	}
	if klog.V(5).Enabled() {
		kv = append(kv, "response", sanitize(resp))
	}
	klog.InfoS("RPC done", kv...)
}
