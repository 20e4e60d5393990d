package main

import (
	"context"
	"fmt"
	"io"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// env is what a running subcommand needs: the connection, the output
// settings and (loaded on first use) the secrets.
type env struct {
	out         io.Writer
	json        bool
	g           *globals
	conn        *grpc.ClientConn
	connErr     error // endpoint problem, reported by the first RPC
	getenv      func(string) string
	secrets     map[string]string
	secretsRead bool
	redact      redactor
}

// newEnv validates the global options and creates a (lazy) client
// connection. Invalid options are usage errors; an invalid endpoint is
// reported by the first RPC so that the command's own flags are checked
// first.
func newEnv(g *globals, out io.Writer, getenv func(string) string) (*env, error) {
	if g.output != "text" && g.output != "json" {
		return nil, usagef("invalid --output %q: must be text or json", g.output)
	}
	if g.timeout <= 0 {
		return nil, usagef("invalid --timeout %s: must be positive", g.timeout)
	}
	e := &env{out: out, json: g.output == "json", g: g, getenv: getenv}
	e.conn, e.connErr = dial(g.endpoint, getenv)
	return e, nil
}

// dial resolves the endpoint (falling back to $CSI_ENDPOINT) and creates a
// client connection; grpc connects on the first RPC.
func dial(endpoint string, getenv func(string) string) (*grpc.ClientConn, error) {
	if endpoint == "" {
		endpoint = getenv("CSI_ENDPOINT")
	}
	sock, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, usageError{err}
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", sock, err)
	}
	return conn, nil
}

func (e *env) close() {
	if e.conn != nil {
		_ = e.conn.Close() // nothing useful to do on failure
	}
}

func (e *env) identity() csi.IdentityClient     { return csi.NewIdentityClient(e.conn) }
func (e *env) controller() csi.ControllerClient { return csi.NewControllerClient(e.conn) }
func (e *env) node() csi.NodeClient             { return csi.NewNodeClient(e.conn) }

// loadSecrets reads the secrets once and remembers their values so that
// all later output and errors are masked.
func (e *env) loadSecrets() (map[string]string, error) {
	if e.secretsRead {
		return e.secrets, nil
	}
	s, err := loadSecrets(e.g.secretsFile, e.getenv)
	if err != nil {
		return nil, err
	}
	e.secrets, e.secretsRead, e.redact = s, true, newRedactor(s)
	return s, nil
}

// rpcError reports a failed RPC with its gRPC code and message.
type rpcError struct {
	method string
	err    error
}

func (r *rpcError) Error() string {
	st := status.Convert(r.err)
	return fmt.Sprintf("%s failed: code = %s, message = %s", r.method, st.Code(), st.Message())
}

func (r *rpcError) Unwrap() error { return r.err }

// invoke performs one RPC with the per-call timeout.
func invoke[Req, Resp any](e *env, method string, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	if e.connErr != nil {
		var zero Resp
		return zero, e.connErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.g.timeout)
	defer cancel()
	resp, err := fn(ctx, req)
	if err != nil {
		return resp, &rpcError{method: method, err: err}
	}
	return resp, nil
}

// emit prints msg as JSON, or as text rendered by the text callback.
func (e *env) emit(msg proto.Message, text func(*textOut)) error {
	if e.json {
		b, err := marshalJSON(msg)
		if err != nil {
			return err
		}
		return writeRedacted(e.out, e.redact, string(b))
	}
	var t textOut
	text(&t)
	return writeRedacted(e.out, e.redact, t.b.String())
}

// emitCaps prints a capabilities response: the capability names as a list
// in text mode, the message itself as JSON.
func emitCaps[C any](e *env, resp proto.Message, caps []C, name func(C) string) error {
	return e.emit(resp, func(t *textOut) {
		names := make([]string, 0, len(caps))
		for _, c := range caps {
			names = append(names, name(c))
		}
		t.list("capabilities", names)
	})
}
