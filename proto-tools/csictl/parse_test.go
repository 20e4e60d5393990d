package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string // substring of the error; empty means success
	}{
		{in: "1", want: 1},
		{in: "1073741824", want: 1 << 30},
		{in: "1Ki", want: 1024},
		{in: "512Mi", want: 512 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "2Ti", want: 2 << 40},
		{in: "007Mi", want: 7 << 20},
		{in: "", wantErr: "expected a whole number"},
		{in: "Gi", wantErr: "expected a whole number"},
		{in: "-1Gi", wantErr: "expected a whole number"},
		{in: "+1Gi", wantErr: "expected a whole number"},
		{in: " 1Gi", wantErr: "expected a whole number"},
		{in: "0", wantErr: "greater than zero"},
		{in: "0Gi", wantErr: "greater than zero"},
		{in: "1.5Gi", wantErr: "fractions are not supported"},
		{in: "1G", wantErr: `unit "G" is not supported`},
		{in: "1GB", wantErr: `unit "GB" is not supported`},
		{in: "1k", wantErr: `unit "k" is not supported`},
		{in: "1gi", wantErr: `unexpected "gi"`},
		{in: "1Gi ", wantErr: "must not contain spaces"},
		{in: "1 Gi", wantErr: "must not contain spaces"},
		{in: "1Pi", wantErr: `unit "Pi" is not supported`},
		{in: "10B", wantErr: `unexpected "B"`},
		{in: "8388608Ti", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "too large"},
		{in: "9223372036854775807", want: 1<<63 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errInvalidSize) {
					t.Fatalf("parseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := map[int64]string{1: "1", 1024: "1Ki", 1536: "1536", 3 << 30: "3Gi", 1 << 40: "1Ti", 1536 << 20: "1536Mi"}
	for in, want := range tests {
		if got := formatSize(in); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestKVFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    map[string]string
		wantErr string
	}{
		{name: "single", args: []string{"pool=rbd"}, want: map[string]string{"pool": "rbd"}},
		{name: "several", args: []string{"a=1", "b=2"}, want: map[string]string{"a": "1", "b": "2"}},
		{name: "empty value", args: []string{"a="}, want: map[string]string{"a": ""}},
		{name: "equals in value", args: []string{"opts=a=b,c=d"}, want: map[string]string{"opts": "a=b,c=d"}},
		{name: "spaces kept", args: []string{"k= v "}, want: map[string]string{"k": " v "}},
		{name: "no equals", args: []string{"pool"}, wantErr: "expected key=value"},
		{name: "empty key", args: []string{"=rbd"}, wantErr: "key is empty"},
		{name: "duplicate", args: []string{"a=1", "a=2"}, wantErr: `duplicate key "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := kvFlag{}
			var err error
			for _, a := range tt.args {
				if err = f.Set(a); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errInvalidKV) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(map[string]string(f), tt.want) {
				t.Fatalf("got %v, %v; want %v", f, err, tt.want)
			}
		})
	}
}

func TestLimitFlag(t *testing.T) {
	tests := []struct {
		args    []string
		wantSet bool
		want    int64
		wantErr bool
	}{
		{args: nil},
		{args: []string{"--limit"}, wantSet: true},
		{args: []string{"--limit=2Gi"}, wantSet: true, want: 2 << 30},
		{args: []string{"--limit=false"}},
		{args: []string{"--limit=2G"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var l limitFlag
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.Var(&l, "limit", "")
			err := fs.Parse(tt.args)
			if (err != nil) != tt.wantErr || l.set != tt.wantSet || l.bytes != tt.want {
				t.Fatalf("got %+v, %v", l, err)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  []string
		wantSize int64
		wantErr  bool
	}{
		{args: []string{"vol", "--size", "1Gi"}, wantPos: []string{"vol"}, wantSize: 1 << 30},
		{args: []string{"--size=1Gi", "vol"}, wantPos: []string{"vol"}, wantSize: 1 << 30},
		{args: []string{"a", "-size", "1Ki", "b"}, wantPos: []string{"a", "b"}, wantSize: 1024},
		{args: []string{"--size", "1Ki", "--", "-odd-name"}, wantPos: []string{"-odd-name"}, wantSize: 1024},
		{args: []string{}, wantPos: nil},
		{args: []string{"vol", "--nope"}, wantErr: true},
		{args: []string{"vol", "--size"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var size sizeFlag
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.Var(&size, "size", "")
			pos, err := parseArgs(fs, tt.args)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want error, got %v", pos)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(pos, tt.wantPos) || int64(size) != tt.wantSize {
				t.Fatalf("got %q size %d err %v; want %q size %d", pos, size, err, tt.wantPos, tt.wantSize)
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "unix:///csi/csi.sock", want: "/csi/csi.sock"},
		{in: "unix:/csi/csi.sock", want: "/csi/csi.sock"},
		{in: "/csi/csi.sock", want: "/csi/csi.sock"},
		{in: "/csi//x/../csi.sock", want: "/csi/csi.sock"},
		{in: "csi.sock", want: filepath.Join(cwd, "csi.sock")},
		{in: "unix:run/csi.sock", want: filepath.Join(cwd, "run/csi.sock")},
		{in: "", wantErr: "empty"},
		{in: "unix:", wantErr: "socket path is empty"},
		{in: "unix://", wantErr: "absolute path"},
		{in: "unix://csi.sock", wantErr: "absolute path"},
		{in: "tcp://127.0.0.1:10000", wantErr: "only unix sockets"},
		{in: "dns:///csi", wantErr: "only unix sockets"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseEndpoint(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errInvalidEndpoint) {
					t.Fatalf("parseEndpoint(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseEndpoint(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseAccessMode(t *testing.T) {
	tests := []struct {
		in      string
		want    csi.VolumeCapability_AccessMode_Mode
		wantErr bool
	}{
		{in: "single-node-writer", want: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		{in: "single-node-reader-only", want: csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY},
		{in: "multi-node-reader-only", want: csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
		{in: "multi-node-single-writer", want: csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER},
		{in: "multi-node-multi-writer", want: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		{in: "single-node-single-writer", want: csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
		{in: "single-node-multi-writer", want: csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER},
		{in: "SINGLE_NODE_WRITER", want: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		{in: "Multi-Node-Multi-Writer", want: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		{in: "unknown", wantErr: true},
		{in: "", wantErr: true},
		{in: "rwo", wantErr: true},
		{in: "single-node", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAccessMode(tt.in)
			if tt.wantErr {
				if err == nil || !errors.Is(err, errInvalidAccessMode) || !strings.Contains(err.Error(), "single-node-writer") {
					t.Fatalf("parseAccessMode(%q) = %v, %v; want error listing the valid modes", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseAccessMode(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if name := accessModeName(got); strings.ReplaceAll(strings.ToLower(tt.in), "_", "-") != name {
				t.Errorf("accessModeName(%v) = %q does not round-trip %q", got, name, tt.in)
			}
		})
	}
}

// secretValue appears in the secrets inputs below; no error may quote it.
const secretValue = "AQDs3cr3t/Key+=="

func TestParseSecrets(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "lines", in: "userID=admin\nuserKey=" + secretValue + "\n",
			want: map[string]string{"userID": "admin", "userKey": secretValue}},
		{name: "comments blanks crlf spaces around key", in: "# ceph\r\n\r\n userID =admin\r\n\tuserKey=" + secretValue,
			want: map[string]string{"userID": "admin", "userKey": secretValue}},
		{name: "equals in value", in: "k=a=b", want: map[string]string{"k": "a=b"}},
		{name: "empty value", in: "k=", want: map[string]string{"k": ""}},
		{name: "json", in: ` {"userID": "admin", "userKey": "` + secretValue + `"} `,
			want: map[string]string{"userID": "admin", "userKey": secretValue}},
		{name: "json empty object", in: "{}", want: map[string]string{}},
		{name: "empty file", in: " \n\n", wantErr: "no secrets found"},
		{name: "yaml", in: "userKey: " + secretValue, wantErr: "line 1"},
		{name: "missing equals", in: "userID=admin\nAQDnoEqualsSign", wantErr: "line 2: invalid secrets format: expected key=value"},
		{name: "empty key", in: "=" + secretValue, wantErr: "empty key"},
		{name: "quoted value", in: `userKey="` + secretValue + `"`, wantErr: "quoted"},
		{name: "duplicate key", in: "k=" + secretValue + "\nk=" + secretValue, wantErr: "line 2: invalid secrets format: duplicate key"},
		{name: "export prefix", in: "export userKey=" + secretValue, wantErr: "must not contain spaces"},
		{name: "json array", in: `["` + secretValue + `"]`, wantErr: "must be an object"},
		{name: "json string", in: `"` + secretValue + `"`, wantErr: "must be an object"},
		{name: "json number value", in: `{"userKey": 12345}`, wantErr: "string values (got number)"},
		{name: "json nested value", in: `{"userKey": {"v": "` + secretValue + `"}}`, wantErr: "string values (got object)"},
		{name: "json syntax", in: `{"userKey": "` + secretValue + `",}`, wantErr: "malformed JSON"},
		{name: "json bare word", in: `{"userKey": ` + secretValue + `}`, wantErr: "malformed JSON"},
		{name: "json trailing data", in: `{"a": "b"} ` + secretValue, wantErr: "malformed JSON"},
		{name: "json empty key", in: `{"": "` + secretValue + `"}`, wantErr: "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSecrets([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errSecretsFormat) {
					t.Fatalf("got %v, %v; want error containing %q", len(got), err, tt.wantErr)
				}
				if strings.Contains(err.Error(), secretValue) || strings.Contains(err.Error(), "AQD") {
					t.Fatalf("error leaks the secret: %v", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %d entries, err %v; want %d entries", len(got), err, len(tt.want))
			}
		})
	}
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secrets")
	if err := os.WriteFile(file, []byte("userKey=from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envJSON := func(v string) func(string) string {
		return func(k string) string {
			if k == secretsEnv {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		file    string
		env     string
		want    map[string]string
		wantErr string
	}{
		{name: "none", want: nil},
		{name: "file", file: file, want: map[string]string{"userKey": "from-file"}},
		{name: "file wins over env", file: file, env: `{"userKey":"from-env"}`, want: map[string]string{"userKey": "from-file"}},
		{name: "env json", env: `{"userKey":"from-env"}`, want: map[string]string{"userKey": "from-env"}},
		{name: "env must be json", env: "userKey=from-env", wantErr: "CSI_SECRETS: invalid secrets format"},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: "reading secrets file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadSecrets(tt.file, envJSON(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "from-env") {
					t.Fatalf("error leaks the secret: %v", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseContextJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "flat", in: `{"pool":"rbd","clusterID":"c1"}`, want: map[string]string{"pool": "rbd", "clusterID": "c1"}},
		{name: "create output", in: `{"volume_id":"v1","capacity_bytes":"1024","volume_context":{"pool":"rbd"},"content_source":null}`,
			want: map[string]string{"pool": "rbd"}},
		{name: "create output empty context", in: `{"volume_id":"v1","volume_context":{}}`, want: map[string]string{}},
		{name: "empty", in: `{}`, want: map[string]string{}},
		{name: "array", in: `[]`, wantErr: true},
		{name: "null", in: `null`, wantErr: true},
		{name: "non-string value", in: `{"pool":1}`, wantErr: true},
		{name: "bad inner", in: `{"volume_context":"x"}`, wantErr: true},
		{name: "not json", in: `pool=rbd`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseContextJSON([]byte(tt.in))
			if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
				t.Fatalf("got %v, %v; want %v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRedactor(t *testing.T) {
	r := newRedactor(map[string]string{"a": "secret", "b": "secret-longer", "c": ""})
	got := r.apply("x secret-longer y secret z")
	if want := "x *** y *** z"; got != want {
		t.Fatalf("apply = %q, want %q", got, want)
	}
}
