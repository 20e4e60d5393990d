package keyonly

import (
	"testing"

	"github.com/rbd-csi/rbd-csi/e2e/sanity"
)

func TestSanityKeyOnlySecrets(t *testing.T) { sanity.RunKeyOnly(t, "mount") }
