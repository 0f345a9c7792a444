//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// The certificates of scripts/buildkitd-certs.sh, with its default names,
// secure a buildkitd over TCP the way docker-compose.yml uses them: the
// build server's client certificate gets in, and without it, with a
// certificate of another CA, or trusting another CA, the handshake fails.
// The buildkitd is one of the test's own (the stack's is not touched).
func TestBuildkitdMTLS(t *testing.T) {
	certs := makeBuildkitdCerts(t)
	other := makeBuildkitdCerts(t) // another CA, with its own certificates
	addr := startTLSBuildkitd(t, certs)
	f := func(dir, name string) string { return filepath.Join(dir, name) }

	cases := []struct {
		name string
		ep   buildkitd.Endpoint
		ok   bool
	}{
		{name: "client certificate", ok: true,
			ep: buildkitd.Endpoint{CACert: f(certs, "ca.crt"), Cert: f(certs, "client.crt"), Key: f(certs, "client.key")}},
		{name: "as compose dials it, by the name buildkitd", ok: true,
			ep: buildkitd.Endpoint{CACert: f(certs, "ca.crt"), Cert: f(certs, "client.crt"), Key: f(certs, "client.key"), ServerName: "buildkitd"}},
		{name: "no client certificate",
			ep: buildkitd.Endpoint{CACert: f(certs, "ca.crt")}},
		{name: "client certificate of another CA",
			ep: buildkitd.Endpoint{CACert: f(certs, "ca.crt"), Cert: f(other, "client.crt"), Key: f(other, "client.key")}},
		{name: "trusting a CA that did not sign buildkitd",
			ep: buildkitd.Endpoint{CACert: f(other, "ca.crt"), Cert: f(certs, "client.crt"), Key: f(certs, "client.key")}},
		{name: "a name the certificate does not have",
			ep: buildkitd.Endpoint{CACert: f(certs, "ca.crt"), Cert: f(certs, "client.crt"), Key: f(certs, "client.key"), ServerName: "elsewhere.example"}},
		{name: "plaintext"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.ep.Address = "tcp://" + addr
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := buildkitd.Dial(ctx, tc.ep)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			workers, err := c.ListWorkers(ctx)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("ListWorkers: %v", err)
			case tc.ok && len(workers) == 0:
				t.Fatal("ListWorkers: no workers")
			case !tc.ok && err == nil:
				t.Fatalf("ListWorkers answered (%d workers); want the TLS handshake to fail", len(workers))
			case !tc.ok && status.Code(err) != codes.Unavailable:
				t.Fatalf("ListWorkers: %v (code %s); want Unavailable, a failed handshake", err, status.Code(err))
			case !tc.ok:
				t.Logf("refused as it should be: %v", err)
			}
		})
	}
}

// makeBuildkitdCerts runs scripts/buildkitd-certs.sh with its defaults into
// a new directory and returns it.
func makeBuildkitdCerts(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	cmd := exec.Command("bash", "../scripts/buildkitd-certs.sh", dir)
	cmd.Env = withoutEnv(os.Environ(), "BUILDKITD_")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/buildkitd-certs.sh: %v\n%s", err, out)
	}
	return dir
}

// withoutEnv is env without the variables whose names start with prefix.
func withoutEnv(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// startTLSBuildkitd starts the stack's buildkitd binary, as a daemon of the
// test's own, on a free loopback TCP port with the TLS flags of
// docker-compose.yml (certificates from certs) and returns its host:port
// once it listens. Its root and OTEL socket are under a directory of the
// test; it has an OCI worker with the native snapshotter (buildkitd will not
// start with no worker; nothing is built). It is stopped when the test ends,
// and its log printed if the test failed.
func startTLSBuildkitd(t *testing.T, certs string) string {
	t.Helper()
	bin := filepath.Join(stackDir(t), "bin", "buildkitd")
	dir := tempDirForDaemon(t)
	conf := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`root = %q
[otel]
  socketPath = %q
[worker.oci]
  enabled = true
  snapshotter = "native"
  gc = false
[worker.containerd]
  enabled = false
`, filepath.Join(dir, "root"), filepath.Join(dir, "otel.sock"))), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "buildkitd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", conf, "--addr", "tcp://"+addr,
		"--tlscacert", filepath.Join(certs, "ca.crt"),
		"--tlscert", filepath.Join(certs, "buildkitd.crt"),
		"--tlskey", filepath.Join(certs, "buildkitd.key"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("buildkitd log:\n%s", b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return addr
		}
		select {
		case <-exited:
			t.Fatal("buildkitd exited before it served")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("buildkitd did not serve within 30s")
		}
	}
}
