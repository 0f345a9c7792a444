package main

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/web"
)

// webSessionKey is the key that seals the page's session cookies: from
// web-session-key-file (hashed to 32 bytes), or a new random one.
func webSessionKey(cfg config, log *slog.Logger) ([]byte, error) {
	if cfg.WebSessionKeyFile == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		log.Info("web sessions sealed with a key of this process: they end when it stops (set web-session-key-file to keep them, and to share them between replicas)")
		return key, nil
	}
	b, err := os.ReadFile(cfg.WebSessionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("web-session-key-file: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("web-session-key-file %s: %d bytes, want at least 32 random ones", cfg.WebSessionKeyFile, len(b))
	}
	key := sha256.Sum256(b)
	return key[:], nil
}

// newWebServer is the HTTP server of the page and the HTTP/JSON API on gs
// (its services registered already), HTTPS when the server has a
// certificate.
func newWebServer(cfg config, gs *grpc.Server, log *slog.Logger) (*http.Server, error) {
	key, err := webSessionKey(cfg, log)
	if err != nil {
		return nil, err
	}
	h, err := web.New(web.Config{GRPC: gs, SessionKey: key, SessionTTL: cfg.WebSessionTTL, Secure: cfg.TLSCert != "",
		Logger: log.With("component", "web")})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No write timeout: WatchBuild streams for as long as a build runs.
	}
	if cfg.TLSCert != "" {
		if srv.TLSConfig, err = auth.TLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	return srv, nil
}

// serveWeb serves srv on lis until it is shut down; errors go to errc.
func serveWeb(srv *http.Server, lis net.Listener, errc chan<- error) {
	var err error
	if srv.TLSConfig != nil {
		err = srv.ServeTLS(lis, "", "")
	} else {
		err = srv.Serve(lis)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		errc <- fmt.Errorf("web: %w", err)
	}
}
