package harness

import "context"

// Believed is what a client holds after its calls succeeded: request name
// to volume ID. Crash tests compare it with the pool afterwards.
type Believed map[string]string

// Step is the next operation on name: a delete when the client believes
// the volume exists and del is true, else a create. The map changes only
// when the call succeeded, so a retry after a kill repeats the same call.
func (b Believed) Step(p *Pool, d *Driver, name string, del bool) func(context.Context) error {
	if id, exists := b[name]; exists && del {
		return func(c context.Context) error {
			_, err := d.Controller().DeleteVolume(c, p.DeleteReq(id))
			if err == nil {
				delete(b, name)
			}
			return err
		}
	}
	return func(c context.Context) error {
		resp, err := d.Controller().CreateVolume(c, p.CreateReq(name))
		if err == nil {
			b[name] = resp.Volume.VolumeId
		}
		return err
	}
}

// Diff compares the images of a pool with what the client believes:
// orphans are images nobody holds an ID for, missing are volumes the
// client holds that are gone.
func (b Believed) Diff(images []string) (orphans, missing []string) {
	want := map[string]bool{}
	for _, id := range b {
		want[ImageName(id)] = true
	}
	for _, img := range images {
		if !want[img] {
			orphans = append(orphans, img)
		}
		delete(want, img)
	}
	for img := range want {
		missing = append(missing, img)
	}
	return orphans, missing
}
