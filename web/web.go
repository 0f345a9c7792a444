// Package web is the build service's face for browsers: the build API as
// HTTP/JSON and the pages that use it, served by the server beside its
// gRPC listener.
//
// The API is the gRPC server itself, transcoded by vanguard: every method
// of build.v1.Build and build.v1.AdminService is there in the Connect
// protocol (POST /api/build.v1.Build/GetBuild with a JSON body; a server
// stream such as WatchBuild as Connect's enveloped JSON messages, which a
// page reads with fetch), with the same authentication, policy and answers
// as over gRPC: there is no second API.
//
// A browser signs in with a link that carries a caller's token
// (/session?token=...): the token is exchanged for a session cookie
// (HttpOnly, SameSite=Strict, sealed with the server's key) and dropped
// from the address bar. Calls made with the cookie must carry the CSRF
// token the page reads from a second cookie, and come from the page's own
// origin; calls with an Authorization header (scripts) need neither.
package web

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
)

//go:embed assets
var assets embed.FS

// Config configures the handler.
type Config struct {
	// GRPC is the server whose services the API serves. Required.
	GRPC *grpc.Server
	// SessionKey seals the session cookies: 32 random bytes, the same for
	// every replica behind one address (else a session lives on one
	// replica only). Required.
	SessionKey []byte
	// SessionTTL is how long a session lasts. Default 12 hours.
	SessionTTL time.Duration
	// Secure marks the cookies Secure: the listener serves HTTPS.
	Secure bool
	// Logger gets sign-ins and refusals. Default slog.Default().
	Logger *slog.Logger
}

// New returns the handler of the pages and the API.
func New(cfg Config) (http.Handler, error) {
	if cfg.GRPC == nil {
		return nil, errors.New("web: the gRPC server is required")
	}
	if len(cfg.SessionKey) != 32 {
		return nil, fmt.Errorf("web: the session key is %d bytes, want 32", len(cfg.SessionKey))
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	api, err := vanguardgrpc.NewTranscoder(cfg.GRPC)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	sealer, err := newSealer(cfg.SessionKey)
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	h := &handler{cfg: cfg, api: api, sessions: sealer, static: static, files: http.FileServerFS(static)}
	mux := http.NewServeMux()
	mux.Handle("POST /api/", http.StripPrefix("/api", http.HandlerFunc(h.serveAPI)))
	mux.HandleFunc("GET /session", h.signIn)
	mux.HandleFunc("POST /session/end", h.signOut)
	mux.Handle("GET /assets/", http.StripPrefix("/assets", h.files))
	mux.HandleFunc("GET /", h.page)
	return securityHeaders(mux), nil
}

type handler struct {
	cfg      Config
	api      http.Handler
	sessions *sealer
	static   fs.FS
	files    http.Handler
}

// page serves the page for every path that is not the API's, the
// session's or an asset: the page routes itself (deep links, the back
// button).
func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	if p := path.Clean(r.URL.Path); p != "/" && !strings.HasPrefix(p, "/builds") && p != "/operators" {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(h.static, "index.html")
	if err != nil {
		http.Error(w, "the page is missing from the server", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// securityHeaders are the page's: its own scripts and styles only, no
// framing, no referrer (a sign-in link's token never leaves in one).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}
