package mapper

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/rbd-csi/rbd-csi/internal/keylock"
)

// mapSteps is what one mapper adds to the Map every mapper shares.
type mapSteps struct {
	name string
	// admit refuses, before anything is locked, an image this mapper cannot
	// map (nil: every valid image).
	admit func(Image) error
	// locks serialise Maps of one image; lock replaces them when set.
	locks *keylock.Locks
	lock  func(context.Context, Image) (func(), error)
	// mapLocked maps the checked image, holding its lock.
	mapLocked func(ctx context.Context, img Image, opts MapOptions, extra []option) (Device, error)
	// proceedsItself: mapLocked calls opts.Proceed itself, later than
	// mapImage would (before mapLocked).
	proceedsItself bool
}

// mapImage is Map: a deadline, the image and options checked, the image
// locked, the mapper's own steps, and the key redacted from any error.
func mapImage(ctx context.Context, timeout time.Duration, s mapSteps, img Image, opts MapOptions) (Device, error) {
	ctx, cancel := withDeadline(ctx, timeout)
	defer cancel()
	img, err := checkImage(img)
	if err != nil {
		return Device{}, err
	}
	if s.admit != nil {
		if err := s.admit(img); err != nil {
			return Device{}, err
		}
	}
	extra, err := parseOptions(s.name, opts.Extra)
	if err != nil {
		return Device{}, err
	}
	unlock, err := s.lockImage(ctx, img)
	if err != nil {
		return Device{}, fmt.Errorf("%w: %w", ErrMapTimeout, err)
	}
	defer unlock()
	if !s.proceedsItself {
		if err := opts.proceed(); err != nil {
			return Device{}, err
		}
	}
	dev, err := s.mapLocked(ctx, img, opts, extra)
	return dev, redact(err, img.Key)
}

func (s mapSteps) lockImage(ctx context.Context, img Image) (func(), error) {
	if s.lock != nil {
		return s.lock(ctx, img)
	}
	return s.locks.Lock(ctx, img.Spec())
}

// deviceImage decodes the image a Device from the caller's state file
// names, after checking that mapperName made it and, when pathRe is set,
// that its path is one of this mapper's devices (pathKind names them).
func deviceImage(dev Device, mapperName string, pathRe *regexp.Regexp, pathKind string) (Image, error) {
	if dev.Mapper != mapperName {
		return Image{}, fmt.Errorf("%w: device %s was mapped by %q, not %q", ErrInvalidDevice, dev.Path, dev.Mapper, mapperName)
	}
	if pathRe != nil && dev.Path != "" && !pathRe.MatchString(dev.Path) {
		return Image{}, fmt.Errorf("%w: %q is not %s path", ErrInvalidDevice, dev.Path, pathKind)
	}
	img := Image{Pool: dev.Attrs[AttrPool], RadosNamespace: dev.Attrs[AttrNamespace], Name: dev.Attrs[AttrImage]}
	if err := validateNames(img); err != nil {
		return Image{}, fmt.Errorf("%w: %s device %s: %v", ErrInvalidDevice, mapperName, dev.Path, err)
	}
	return img, nil
}
