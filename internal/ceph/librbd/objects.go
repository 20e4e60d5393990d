package librbd

import "fmt"

// The RADOS objects and omap keys of librbd's on-disk format that the
// driver reads or writes itself, named once.
const (
	// poolInfoObject holds a pool's RBD markers and its pool metadata (omap
	// keys metadataPrefix + key), `rbd config pool` overrides among them.
	poolInfoObject = "rbd_info"
	// metadataPrefix starts the header omap keys that hold image-meta.
	metadataPrefix = "metadata_"
	// dataPrefix starts the names of an image's data objects (followed by
	// the image ID when the image has no separate data pool).
	dataPrefix = "rbd_data."
	// parentKey is the header omap key a clone keeps its parent under,
	// until it is flattened.
	parentKey = "parent"
)

// dataObject holds object number n of an image with ID id and no
// separate data pool.
func dataObject(id string, n uint64) string { return fmt.Sprintf("%s%s.%016x", dataPrefix, id, n) }

// idObject holds the ID of the image called name.
func idObject(name string) string { return "rbd_id." + name }

// headerObject holds the size, features, snapshots and image-meta of the
// image with ID id.
func headerObject(id string) string { return "rbd_header." + id }
