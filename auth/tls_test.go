package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/auth"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "server CA")
	certPEM, keyPEM := ca.server(t, "one")
	certFile := writeFile(t, dir, "tls.crt", certPEM, 0o644)
	keyFile := writeFile(t, dir, "tls.key", keyPEM, 0o600)
	caFile := writeFile(t, dir, "ca.crt", ca.pem, 0o644)
	notPEM := writeFile(t, dir, "junk.crt", []byte("not a certificate\n"), 0o644)
	absent := filepath.Join(dir, "absent")

	tests := []struct {
		name                string
		cert, key, clientCA string
		wantErr             string
		wantClientAuth      tls.ClientAuthType
		wantClientCAs       bool
	}{
		{name: "no client CA", cert: certFile, key: keyFile, wantClientAuth: tls.NoClientCert},
		{name: "client CA", cert: certFile, key: keyFile, clientCA: caFile,
			wantClientAuth: tls.VerifyClientCertIfGiven, wantClientCAs: true},
		{name: "no cert", key: keyFile, wantErr: "both a certificate file and a key file"},
		{name: "no key", cert: certFile, wantErr: "both a certificate file and a key file"},
		{name: "missing cert", cert: absent, key: keyFile, wantErr: "certificate"},
		{name: "missing key", cert: certFile, key: absent, wantErr: "key"},
		{name: "key does not fit", cert: certFile, key: certFile, wantErr: "tls:"},
		{name: "missing client CA", cert: certFile, key: keyFile, clientCA: absent, wantErr: "client CA"},
		{name: "client CA not PEM", cert: certFile, key: keyFile, clientCA: notPEM, wantErr: "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := auth.TLSConfig(tt.cert, tt.key, tt.clientCA)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("TLSConfig: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
			}
			if cfg.ClientAuth != tt.wantClientAuth {
				t.Errorf("ClientAuth %v, want %v", cfg.ClientAuth, tt.wantClientAuth)
			}
			if (cfg.ClientCAs != nil) != tt.wantClientCAs {
				t.Errorf("ClientCAs set %v, want %v", cfg.ClientCAs != nil, tt.wantClientCAs)
			}
			if got := servedCN(t, cfg); got != "one" {
				t.Errorf("served certificate %q, want one", got)
			}
		})
	}
}

// servedCN returns the common name of the certificate cfg serves.
func servedCN(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestTLSConfigReload(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "server CA")
	certPEM, keyPEM := ca.server(t, "one")
	certFile := writeFile(t, dir, "tls.crt", certPEM, 0o644)
	keyFile := writeFile(t, dir, "tls.key", keyPEM, 0o600)
	cfg, err := auth.TLSConfig(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := servedCN(t, cfg); got != "one" {
		t.Fatalf("served %q, want one", got)
	}
	// touch sets both files' mtime to a new time, so a change is seen even
	// on file systems with coarse timestamps.
	stamp := time.Now()
	touch := func() {
		stamp = stamp.Add(time.Minute)
		for _, p := range []string{certFile, keyFile} {
			if err := os.Chtimes(p, stamp, stamp); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Half a renewal: a new certificate with the old key does not load;
	// the old pair is still served.
	certPEM2, keyPEM2 := ca.server(t, "two")
	writeFile(t, dir, "tls.crt", certPEM2, 0o644)
	touch()
	if got := servedCN(t, cfg); got != "one" {
		t.Errorf("with a key that does not fit, served %q, want one", got)
	}
	// The renewal completed.
	writeFile(t, dir, "tls.key", keyPEM2, 0o600)
	touch()
	if got := servedCN(t, cfg); got != "two" {
		t.Errorf("after renewal, served %q, want two", got)
	}

	// And a real handshake sees it.
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = tls.Server(c, cfg).Handshake()
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cn := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "two" {
		t.Errorf("handshake served %q, want two", cn)
	}
}
