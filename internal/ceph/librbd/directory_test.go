package librbd

import (
	"slices"
	"testing"

	"github.com/rbd-csi/rbd-csi/internal/ceph"
)

func TestDecodeDirectory(t *testing.T) {
	tests := []struct {
		name    string
		vals    map[string][]byte
		want    []ceph.ImageEntry
		wantBad []string
	}{
		{
			name: "every entry decodes: all listed, sorted by name",
			vals: map[string][]byte{"name_b": encodeStrings("id2"), "name_a": encodeStrings("id1")},
			want: []ceph.ImageEntry{{Name: "a", ID: "id1"}, {Name: "b", ID: "id2"}},
		},
		{
			name:    "a damaged entry is reported by name, the others still listed",
			vals:    map[string][]byte{"name_a": encodeStrings("id1"), "name_broken": {9, 0, 0, 0, 'x'}, "name_c": encodeStrings("id3")},
			want:    []ceph.ImageEntry{{Name: "a", ID: "id1"}, {Name: "c", ID: "id3"}},
			wantBad: []string{"broken"},
		},
		{
			name:    "an entry too short for its length is damaged",
			vals:    map[string][]byte{"name_short": {1, 0}},
			wantBad: []string{"short"},
		},
		{
			name: "an empty directory lists nothing",
			vals: map[string][]byte{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, bad := decodeDirectory(tt.vals)
			if !slices.Equal(got, tt.want) {
				t.Errorf("entries = %v, want %v", got, tt.want)
			}
			var names []string
			for _, b := range bad {
				names = append(names, b.name)
				if b.Error() == "" {
					t.Errorf("bad entry %q has no message", b.name)
				}
			}
			if !slices.Equal(names, tt.wantBad) {
				t.Errorf("unreadable entries = %v, want %v", names, tt.wantBad)
			}
		})
	}
}
