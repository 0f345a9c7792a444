package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthCommand is `buildsvc-server health`: it asks a running server's
// gRPC health service whether it serves, for a container healthcheck (the
// image has no shell or other client). It exits 0 when the answer is
// SERVING, which the server says while buildkitd answers, and 1 otherwise.
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:      "health",
		Usage:     "ask a running server whether it serves (gRPC health); exit 0 if it does, 1 if not",
		ArgsUsage: " ",
		Description: "For container healthchecks, e.g. in docker-compose.yml:\n" +
			`  test: ["CMD", "buildsvc-server", "health", "--addr=127.0.0.1:17070"]` + "\n" +
			"The server reports SERVING while its buildkitd answers.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "`ADDRESS` of the server; default the server's listen setting (flag, env var, config file or default), with 0.0.0.0 or :: as loopback"},
			&cli.StringFlag{Name: "service", Usage: "`NAME` of the service to ask about; default the whole server"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "how long to wait for the answer"},
			&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate `FILE` to verify the server with, when it serves TLS (--tls-cert)"},
			&cli.StringFlag{Name: "tls-server-name", Usage: "`NAME` to check in the server's certificate; default the host of --addr"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return cli.Exit(fmt.Sprintf("health: unexpected argument %q", c.Args().First()), 2)
			}
			addr := c.String("addr")
			if addr == "" {
				settings, err := resolve(c, c.String(flagConfig))
				if err != nil {
					return cli.Exit("health: "+err.Error(), 2)
				}
				addr = dialable(settings["listen"].value)
			}
			creds := insecure.NewCredentials()
			if ca := c.String("tls-ca"); ca != "" {
				tcfg, err := healthTLS(ca, c.String("tls-server-name"))
				if err != nil {
					return cli.Exit("health: "+err.Error(), 2)
				}
				creds = credentials.NewTLS(tcfg)
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			st, err := checkHealth(ctx, addr, c.String("service"), creds)
			if err != nil {
				return cli.Exit(fmt.Sprintf("health: %s: %v", addr, err), 1)
			}
			if st != healthpb.HealthCheckResponse_SERVING {
				return cli.Exit(fmt.Sprintf("health: %s: %s", addr, st), 1)
			}
			fmt.Fprintln(c.App.Writer, st)
			return nil
		},
	}
}

// checkHealth asks the health service at addr about service.
func checkHealth(ctx context.Context, addr, service string, creds credentials.TransportCredentials) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		return 0, err
	}
	return resp.GetStatus(), nil
}

// dialable turns a listen address into one to dial: an unspecified host
// (empty, 0.0.0.0, ::) is the loopback address.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// healthTLS verifies the server against the CA in caFile.
func healthTLS(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("--tls-ca: no PEM certificate in " + caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}, nil
}
