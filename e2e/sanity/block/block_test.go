package block

import (
	"testing"

	"github.com/rbd-csi/rbd-csi/e2e/sanity"
)

func TestSanityBlockVolumes(t *testing.T) { sanity.Run(t, "block") }
