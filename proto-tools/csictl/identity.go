package main

import (
	"flag"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
)

var infoCmd = &command{
	name:    "info",
	group:   "identity",
	summary: "show plugin name, version, manifest and capabilities (GetPluginInfo + GetPluginCapabilities)",
	details: "With --output json both responses are printed as members plugin_info and plugin_capabilities of one object.",
	bind:    func(*flag.FlagSet) action { return runInfo },
}

var probeCmd = &command{
	name:    "probe",
	group:   "identity",
	summary: "check plugin readiness (Probe)",
	bind:    func(*flag.FlagSet) action { return runProbe },
}

func runInfo(e *env, _ []string) error {
	info, err := invoke(e, "GetPluginInfo", e.identity().GetPluginInfo, &csi.GetPluginInfoRequest{})
	if err != nil {
		return err
	}
	caps, err := invoke(e, "GetPluginCapabilities", e.identity().GetPluginCapabilities, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return err
	}
	if e.json {
		b, err := marshalJSONObject([]string{"plugin_info", "plugin_capabilities"}, []proto.Message{info, caps})
		if err != nil {
			return err
		}
		return writeRedacted(e.out, e.redact, string(b))
	}
	var t textOut
	t.field("name", info.GetName())
	t.field("vendor_version", info.GetVendorVersion())
	t.kvs("manifest", info.GetManifest())
	t.list("capabilities", pluginCapNames(caps.GetCapabilities()))
	return writeRedacted(e.out, e.redact, t.b.String())
}

// pluginCapNames renders plugin capabilities as "SERVICE CONTROLLER_SERVICE"
// or "VOLUME_EXPANSION ONLINE".
func pluginCapNames(caps []*csi.PluginCapability) []string {
	names := make([]string, 0, len(caps))
	for _, c := range caps {
		switch {
		case c.GetService() != nil:
			names = append(names, "SERVICE "+c.GetService().GetType().String())
		case c.GetVolumeExpansion() != nil:
			names = append(names, "VOLUME_EXPANSION "+c.GetVolumeExpansion().GetType().String())
		default:
			names = append(names, fmt.Sprintf("UNKNOWN %v", c))
		}
	}
	return names
}

func runProbe(e *env, _ []string) error {
	resp, err := invoke(e, "Probe", e.identity().Probe, &csi.ProbeRequest{})
	if err != nil {
		return err
	}
	return e.emit(resp, func(t *textOut) {
		if resp.GetReady() == nil {
			t.field("ready", "unknown (not reported by the plugin)")
			return
		}
		t.field("ready", resp.GetReady().GetValue())
	})
}
