package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonOptions renders responses with the proto field names (volume_id,
// capacity_bytes, ...) and with every field present, so scripts can rely
// on the keys. int64 fields are JSON strings, as protojson defines.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// textOut accumulates the human-readable rendering of a response.
type textOut struct {
	b strings.Builder
}

// field prints "name: value".
func (t *textOut) field(name string, value any) {
	fmt.Fprintf(&t.b, "%s: %v\n", name, value)
}

// line prints a formatted line.
func (t *textOut) line(format string, a ...any) {
	fmt.Fprintf(&t.b, format+"\n", a...)
}

// kvs prints a map as an indented, sorted list of key=value lines.
func (t *textOut) kvs(name string, m map[string]string) {
	if len(m) == 0 {
		t.field(name, "(none)")
		return
	}
	t.line("%s:", name)
	for _, k := range sortedKeys(m) {
		t.line("  %s=%s", k, m[k])
	}
}

// list prints a list of strings, one per indented line.
func (t *textOut) list(name string, items []string) {
	if len(items) == 0 {
		t.field(name, "(none)")
		return
	}
	t.line("%s:", name)
	for _, it := range items {
		t.line("  %s", it)
	}
}

// table prints tab-aligned rows below a header.
func (t *textOut) table(header []string, rows [][]string) {
	tw := tabwriter.NewWriter(&t.b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush() // writes to a strings.Builder cannot fail
}

// marshalJSON renders msg with protojson, normalising the whitespace
// (protojson deliberately varies it) into stable two-space indentation.
func marshalJSON(msg proto.Message) ([]byte, error) {
	raw, err := jsonOptions.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding response as JSON: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indenting JSON: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// marshalJSONObject renders several messages as members of one object, in
// the given order.
func marshalJSONObject(names []string, msgs []proto.Message) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, msg := range msgs {
		raw, err := jsonOptions.Marshal(msg)
		if err != nil {
			return nil, fmt.Errorf("encoding %s as JSON: %w", names[i], err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", names[i], raw)
	}
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("indenting JSON: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// writeRedacted writes s to w with every secret value masked.
func writeRedacted(w io.Writer, r redactor, s string) error {
	if _, err := io.WriteString(w, r.apply(s)); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
