package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// defaultServerAddr is where the server listens unless told otherwise.
const defaultServerAddr = "127.0.0.1:17070"

// serverFlag is the --server flag every command that talks to the server has.
func serverFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "server",
		Usage:   "the build server's gRPC `ADDRESS`, host:port",
		EnvVars: []string{"BUILD_SERVER_ADDR"},
		Value:   defaultServerAddr,
	}
}

// dialServer makes a client for the server named by --server. The connection
// is lazy: an unreachable server shows up on the first call.
func dialServer(cCtx *cli.Context) (buildv1.BuildClient, func(), error) {
	addr := cCtx.String("server")
	if strings.TrimSpace(addr) == "" {
		return nil, nil, usageError(cCtx, "--server is empty")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, usageError(cCtx, "--server %q: %v", addr, err)
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

// callError turns the error of a call to the server into the command's
// error, keeping the server's own message, which names the bad field.
func callError(cCtx *cli.Context, call string, err error) error {
	if cCtx.Context.Err() != nil {
		return cli.Exit("interrupted", exitFailed)
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return fmt.Errorf("%s: %w", call, err)
	}
	st := se.GRPCStatus()
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
