package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protowire"
)

// deprecatedVolumeCondition is the VOLUME_CONDITION node capability (4).
// CSI 1.13 replaced it with GET_VOLUME_HEALTH and reserved the number, but
// the kubelets in use today still look for it before reading a volume
// condition from NodeGetVolumeStats, so it is advertised alongside the new
// capability.
const deprecatedVolumeCondition = csi.NodeServiceCapability_RPC_Type(4)

// setLegacyVolumeCondition puts the pre-1.13 volume_condition message
// (field 2 of NodeGetVolumeStatsResponse: {bool abnormal = 1; string
// message = 2}) on the wire as an unknown field, which is exactly what
// kubelets built against older CSI specs decode.
func setLegacyVolumeCondition(resp *csi.NodeGetVolumeStatsResponse, problem string) {
	var cond []byte
	if problem != "" {
		cond = protowire.AppendTag(cond, 1, protowire.VarintType)
		cond = protowire.AppendVarint(cond, 1)
	}
	cond = protowire.AppendTag(cond, 2, protowire.BytesType)
	cond = protowire.AppendString(cond, conditionMessage(problem))
	field := protowire.AppendTag(nil, 2, protowire.BytesType)
	field = protowire.AppendBytes(field, cond)
	resp.ProtoReflect().SetUnknown(field)
}

// NodeGetVolumeHealth implements csi.NodeServer (CSI 1.13).
func (d *nodeService) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	health := &csi.VolumeHealth{VolumeId: req.GetVolumeId()}
	if problem := d.volumeProblem(ctx, req.GetVolumeId(), req.GetStagingTargetPath()); problem != "" {
		health.HealthStatuses = append(health.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: "NodeVolumeAbnormal", Message: problem,
		})
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}

func conditionMessage(problem string) string {
	if problem == "" {
		return "volume is healthy"
	}
	return problem
}
