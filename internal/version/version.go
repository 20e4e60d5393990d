// Package version holds the build's version, set by the linker:
//
//	-ldflags "-X github.com/rbd-csi/rbd-csi/internal/version.Version=v0.1.0"
package version

// Version is the driver version reported by GetPluginInfo.
var Version = "dev"
