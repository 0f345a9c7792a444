package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/buildsvc/buildsvc/auth"
)

// withConnFlags adds the flags of the connection to the server (TLS and
// the caller's token) to a command's flags.
func withConnFlags(flags []cli.Flag) []cli.Flag {
	return append(flags,
		&cli.StringFlag{Name: "token-file", Usage: "`FILE` holding the bearer token that identifies you to the server (mode 0600)", EnvVars: []string{"BUILDSVC_TOKEN_FILE"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate `FILE` to verify the server with; turns TLS on", EnvVars: []string{"BUILDSVC_TLS_CA"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate `FILE` for mTLS (with --tls-key)", EnvVars: []string{"BUILDSVC_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "client key `FILE` for mTLS (with --tls-cert)", EnvVars: []string{"BUILDSVC_TLS_KEY"}},
		&cli.StringFlag{Name: "tls-server-name", Usage: "`NAME` to check in the server's certificate; default the host of --server", EnvVars: []string{"BUILDSVC_TLS_SERVER_NAME"}},
	)
}

// dialConn makes a connection to the server named by --server, with TLS
// when --tls-ca (or a client certificate) is given and the token of
// --token-file on every call. The connection is lazy: an unreachable server
// shows up on the first call. Bad flags are usage errors (exit 2).
func dialConn(cCtx *cli.Context) (*grpc.ClientConn, error) {
	addr := cCtx.String("server")
	if strings.TrimSpace(addr) == "" {
		return nil, usageError(cCtx, "--server is empty")
	}
	opts := []grpc.DialOption{grpc.WithConnectParams(connectParams)}
	ca, cert, key := cCtx.String("tls-ca"), cCtx.String("tls-cert"), cCtx.String("tls-key")
	useTLS := ca != "" || cert != "" || key != ""
	if useTLS {
		cfg, err := clientTLS(ca, cert, key, cCtx.String("tls-server-name"))
		if err != nil {
			return nil, usageError(cCtx, "%v", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if f := cCtx.String("token-file"); f != "" {
		token, err := auth.ReadTokenFile(f)
		if err != nil {
			return nil, usageError(cCtx, "--token-file: %v", err)
		}
		// Over plaintext only to a loopback address: a token must not
		// cross a network in the clear.
		if !useTLS && !loopback(addr) {
			return nil, usageError(cCtx, "--token-file needs TLS (--tls-ca) to reach %s", addr)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(auth.TokenCredentials(token, useTLS)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usageError(cCtx, "--server %q: %v", addr, err)
	}
	return conn, nil
}

// clientTLS is the TLS config that verifies the server against caFile (or
// the system's roots) and, with certFile and keyFile, presents a client
// certificate.
func clientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// loopback reports whether addr (host:port) is a loopback address or
// localhost.
func loopback(addr string) bool {
	host := addr
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}
