package mapper

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestMapImageAsksProceedBeforeTheMappersOwnSteps(t *testing.T) {
	refused := errors.New("in use elsewhere")
	tests := []struct {
		name           string
		proceed        func() error
		proceedsItself bool
		wantMapped     bool
		wantErr        error
	}{
		{"no Proceed maps", nil, false, true, nil},
		{"a passing Proceed maps", func() error { return nil }, false, true, nil},
		{"a refusal stops the map and is returned unwrapped", func() error { return refused }, false, false, refused},
		{"a mapper that asks itself is left to ask", func() error { return refused }, true, true, nil},
	}
	img := Image{Monitors: []string{"10.0.0.1"}, User: "admin", Key: testKey, Pool: "kube", Name: "img"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mapped := false
			steps := mapSteps{name: Fuse, lock: func(context.Context, Image) (func(), error) { return func() {}, nil },
				mapLocked: func(context.Context, Image, MapOptions, []option) (Device, error) {
					mapped = true
					return Device{}, nil
				},
				proceedsItself: tc.proceedsItself,
			}
			_, err := mapImage(context.Background(), time.Minute, steps, img, MapOptions{Proceed: tc.proceed})
			if mapped != tc.wantMapped || err != tc.wantErr {
				t.Fatalf("mapped %v, err %v; want mapped %v, err %v", mapped, err, tc.wantMapped, tc.wantErr)
			}
		})
	}
}
