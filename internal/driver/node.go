package driver

// NodeOptions configure the node plugin.
type NodeOptions struct {
	// StateDir holds per-volume stage state and mapper working files.
	StateDir string
	// Mapper is the node-wide default mapper (krbd, rbd-nbd, fuse).
	Mapper string
}

type nodeState struct{}

func newNodeState(Options) (*nodeState, error) { return &nodeState{}, nil }
