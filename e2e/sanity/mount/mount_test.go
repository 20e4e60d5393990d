package mount

import (
	"testing"

	"github.com/rbd-csi/rbd-csi/e2e/sanity"
)

func TestSanityMountVolumes(t *testing.T) { sanity.Run(t, "mount") }
