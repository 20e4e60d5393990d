package librbd

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
)

// idObject holds the ID of the image called name.
func idObject(name string) string { return "rbd_id." + name }

// headerObject holds the size, features, snapshots and image-meta of the
// image with ID id.
func headerObject(id string) string { return "rbd_header." + id }
