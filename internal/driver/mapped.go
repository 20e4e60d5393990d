package driver

import "github.com/rbd-csi/rbd-csi/internal/node/mapper"

// MapperNames lists the mappers the node plugin can use, for metrics that
// report every mapper from the start.
func MapperNames() []string { return mapper.Names() }

// MappedVolumes counts the volumes this node has mapped, by mapper. It reads
// the volume index and the stage states on disk, which the node service
// keeps for its own restarts, so the count needs no bookkeeping of its own
// and survives a plugin restart; a volume counts from the moment its device
// is recorded until it is unstaged. It is nil in controller mode.
func (d *Driver) MappedVolumes() map[string]int {
	if d.node == nil {
		return nil
	}
	counts := map[string]int{}
	for _, staging := range d.node.index.stagingPaths() {
		st, err := loadState(staging)
		if err != nil || st == nil || st.Device == nil {
			continue
		}
		counts[st.Mapper]++
	}
	return counts
}
