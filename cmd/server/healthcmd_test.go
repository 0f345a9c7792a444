package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthTarget is a gRPC health service on a free loopback port, as the
// server registers it.
type healthTarget struct {
	addr string
	hs   *health.Server
}

func startHealthTarget(t *testing.T, opts ...grpc.ServerOption) healthTarget {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return healthTarget{addr: lis.Addr().String(), hs: hs}
}

// selfSigned writes a self-signed certificate for name and returns its
// file and the server's TLS certificate.
func selfSigned(t *testing.T, name string) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// `buildsvc-server health` exits 0 only when the server's health service
// says SERVING: for the whole server by default, for a service when asked,
// over TLS when given the CA; at the --listen address unless told another.
func TestHealthCommand(t *testing.T) {
	clearEnv(t)
	plain := startHealthTarget(t)
	plain.hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	plain.hs.SetServingStatus("build.v1.Build", healthpb.HealthCheckResponse_SERVING)
	plain.hs.SetServingStatus("build.v1.AdminService", healthpb.HealthCheckResponse_NOT_SERVING)
	down := startHealthTarget(t)
	down.hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	caFile, cert := selfSigned(t, "build.example")
	secure := startHealthTarget(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	secure.hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	_, port, _ := net.SplitHostPort(plain.addr)
	closed := func() string { // a port nothing listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()

	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int // exit code; 0 is success
		out  string
	}{
		{name: "serving", args: []string{"--addr", plain.addr}, out: "SERVING"},
		{name: "a service that serves", args: []string{"--addr", plain.addr, "--service", "build.v1.Build"}, out: "SERVING"},
		{name: "a service that does not", args: []string{"--addr", plain.addr, "--service", "build.v1.AdminService"}, code: 1},
		{name: "not serving", args: []string{"--addr", down.addr}, code: 1},
		{name: "unknown service", args: []string{"--addr", plain.addr, "--service", "nope.v1.Nope"}, code: 1},
		{name: "nothing listens", args: []string{"--addr", closed, "--timeout", "300ms"}, code: 1},
		{name: "the listen address, unspecified host as loopback", env: map[string]string{"BUILDSVC_LISTEN": "0.0.0.0:" + port}, out: "SERVING"},
		{name: "the --listen flag", args: []string{"--listen", "127.0.0.1:" + port}, out: "SERVING"},
		{name: "the config file's listen", args: []string{"--config", writeFile(t, "listen: ':"+port+"'\n")}, out: "SERVING"},
		{name: "a bad config file", args: []string{"--config", writeFile(t, "nope: 1\n")}, code: 2},
		{name: "TLS with the CA", args: []string{"--addr", secure.addr, "--tls-ca", caFile, "--tls-server-name", "build.example"}, out: "SERVING"},
		{name: "TLS server, plaintext check", args: []string{"--addr", secure.addr, "--timeout", "300ms"}, code: 1},
		{name: "TLS, a name the certificate lacks", args: []string{"--addr", secure.addr, "--tls-ca", caFile, "--tls-server-name", "other.example", "--timeout", "300ms"}, code: 1},
		{name: "missing CA file", args: []string{"--addr", secure.addr, "--tls-ca", filepath.Join(t.TempDir(), "none.crt")}, code: 2},
		{name: "an argument", args: []string{"--addr", plain.addr, "extra"}, code: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			// Global flags (--listen) come before the command.
			var global, local []string
			for i := 0; i < len(tc.args); i++ {
				if tc.args[i] == "--listen" || tc.args[i] == "--config" {
					global = append(global, tc.args[i], tc.args[i+1])
					i++
					continue
				}
				local = append(local, tc.args[i])
			}
			var out, errOut bytes.Buffer
			app := newApp(&out, &errOut, func(context.Context, config, *slog.Logger) error {
				t.Fatal("health served")
				return nil
			})
			args := append(append(append([]string{"buildsvc-server"}, global...), "health"), local...)
			err := app.RunContext(context.Background(), args)
			code := 0
			if err != nil {
				code = 1
				var ec cli.ExitCoder
				if errors.As(err, &ec) {
					code = ec.ExitCode()
				}
			}
			if code != tc.code {
				t.Fatalf("exit code %d (err %v), want %d", code, err, tc.code)
			}
			if got := strings.TrimSpace(out.String()); got != tc.out {
				t.Errorf("stdout %q, want %q", got, tc.out)
			}
		})
	}
}

func TestDialable(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"0.0.0.0:17070", "127.0.0.1:17070"},
		{":17070", "127.0.0.1:17070"},
		{"[::]:17070", "[::1]:17070"},
		{"127.0.0.1:17070", "127.0.0.1:17070"},
		{"10.1.2.3:17070", "10.1.2.3:17070"},
		{"build.example:17070", "build.example:17070"},
		{"no-port", "no-port"},
	} {
		if got := dialable(tc.listen); got != tc.want {
			t.Errorf("dialable(%q) = %q, want %q", tc.listen, got, tc.want)
		}
	}
}
