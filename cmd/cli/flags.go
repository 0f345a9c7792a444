package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// defaultServerAddr is where the server listens unless told otherwise.
const defaultServerAddr = "127.0.0.1:17070"

// serverFlag is the --server flag every command that talks to the server has.
func serverFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "server",
		Usage:   "the build server's gRPC `ADDRESS`, host:port",
		EnvVars: []string{"BUILDSVC_SERVER", "BUILD_SERVER_ADDR"},
		Value:   defaultServerAddr,
	}
}

// connectParams pace gRPC's own reconnection to the server so that it keeps
// up with reattaching (see progress.DefaultBackoff): with gRPC's defaults,
// the wait between connection attempts grows to two minutes, and a stream
// could not be resumed for that long after a server restart.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 20 * time.Second,
}

// dialServer makes a client for the server named by --server. The connection
// is lazy: an unreachable server shows up on the first call.
func dialServer(cCtx *cli.Context) (buildv1.BuildClient, func(), error) {
	conn, err := dialConn(cCtx)
	if err != nil {
		return nil, nil, err
	}
	return buildv1.NewBuildClient(conn), func() { _ = conn.Close() }, nil
}

// parseKV parses repeated K=V flag values into a map. A value may be empty and
// may hold "="; a key may not be empty or given twice.
func parseKV(flag string, values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(values))
	for _, kv := range values {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--%s %q: want KEY=VALUE", flag, kv)
		case k == "":
			return nil, fmt.Errorf("--%s %q: the key is empty", flag, kv)
		case strings.TrimSpace(k) != k:
			return nil, fmt.Errorf("--%s %q: the key has leading or trailing space", flag, kv)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("--%s: %s is given more than once", flag, k)
		}
		m[k] = v
	}
	return m, nil
}

// exitCodeFor classifies a gRPC code: the server refusing the request as
// invalid, or because something it names does not exist, is bad usage;
// anything else is a failure.
func exitCodeFor(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.NotFound:
		return exitUsage
	default:
		return exitFailed
	}
}

// grpcStatus finds the gRPC status err wraps, with the server's own message
// (status.FromError would put err's whole text in the message).
func grpcStatus(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus() == nil {
		return nil, false
	}
	return se.GRPCStatus(), true
}

// callError turns the error of a call to the server into the command's
// error, keeping the server's own message, which names the bad field.
func callError(cCtx *cli.Context, call string, err error) error {
	if cCtx.Context.Err() != nil {
		return cli.Exit("interrupted", exitFailed)
	}
	st, ok := grpcStatus(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	msg := st.Message()
	if msg == "" {
		msg = st.Code().String()
	}
	switch code := exitCodeFor(st.Code()); {
	case code == exitUsage:
		return cli.Exit(msg, code)
	case st.Code() == codes.Unavailable:
		return cli.Exit(fmt.Sprintf("%s: server %s unavailable: %s", call, cCtx.String("server"), msg), code)
	default:
		return cli.Exit(fmt.Sprintf("%s: %s (%s)", call, msg, st.Code()), code)
	}
}

// outputFlag is the --output flag of the commands that print records.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the output `FORMAT`: text, or json for scripts", Value: "text"}
}

// jsonOutput reports whether --output asks for JSON. Its error is a usage
// error.
func jsonOutput(cCtx *cli.Context) (bool, error) {
	switch output := cCtx.String("output"); output {
	case "text":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, usageError(cCtx, "--output %q: want text or json", output)
	}
}

// writeJSON prints m as one indented JSON document, with the API's JSON
// field names (buildId, gitRepo, ...) and state names
// (BUILD_STATE_SUCCEEDED). protojson's own spacing varies from run to run on
// purpose; encoding/json's indentation is stable.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(w)
	return err
}

// statePrefix is the prefix of every BuildState name, left out of text output.
const statePrefix = "BUILD_STATE_"

// stateName is the name a state goes by in text output and in --state:
// lowercase, without the prefix, e.g. "building".
func stateName(s buildv1.BuildState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), statePrefix))
}

// parseState parses a state name as stateName gives it, in any case; the
// full enum name (BUILD_STATE_QUEUED) is accepted too.
func parseState(name string) (buildv1.BuildState, error) {
	upper := strings.ToUpper(strings.TrimSpace(name))
	v, ok := buildv1.BuildState_value[statePrefix+strings.TrimPrefix(upper, statePrefix)]
	if !ok || v == int32(buildv1.BuildState_BUILD_STATE_UNSPECIFIED) {
		return 0, fmt.Errorf("unknown state %q: want one of %s", name, strings.Join(stateNames(), ", "))
	}
	return buildv1.BuildState(v), nil
}

// stateNames lists the states a build can be in, in the order of its life.
func stateNames() []string {
	var names []string
	for v := int32(1); ; v++ {
		if _, ok := buildv1.BuildState_name[v]; !ok {
			return names
		}
		names = append(names, stateName(buildv1.BuildState(v)))
	}
}
