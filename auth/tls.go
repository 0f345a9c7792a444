package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSConfig returns the server's TLS configuration: TLS 1.2 or later, the
// certificate and key from certFile and keyFile (PEM), re-read when either
// file changes so that a renewed certificate is served without a restart.
// When clientCAFile is set, a client certificate is requested and, if the
// client sends one, verified against the CAs in clientCAFile: callers with
// a token need no certificate, and a certificate that does not verify ends
// the handshake.
func TLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: both a certificate file and a key file are needed")
	}
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		ClientAuth:     tls.NoClientCert,
	}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client CA %s: no PEM certificate in it", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// fileStamp is what says a file changed.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// stamp returns path's fileStamp.
func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mtime: fi.ModTime(), size: fi.Size()}, nil
}

// certReloader serves a certificate and key pair, re-reading them when
// either file's modification time or size changes. While the new files do
// not load (a renewal half written, a key that does not fit), it keeps
// serving the last pair that did.
type certReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp fileStamp
	keyStamp  fileStamp
}

// load reads the pair if the files changed since the last load.
func (r *certReloader) load() error {
	cs, err := stamp(r.certFile)
	if err != nil {
		return fmt.Errorf("tls: certificate: %w", err)
	}
	ks, err := stamp(r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: key: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && cs == r.certStamp && ks == r.keyStamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	r.cert, r.certStamp, r.keyStamp = &cert, cs, ks
	return nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	// An error here means the files changed but do not load (yet): keep
	// serving the pair that loaded last; the next handshake tries again.
	_ = r.load()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}
