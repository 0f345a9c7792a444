// Command githttps serves bare git repositories over git's smart HTTP
// protocol, over TLS and behind HTTP basic auth, for the local stack's
// "private sources". Each request's credentials are checked against one
// user and a token file before `git http-backend` (run through net/http/cgi
// from `git --exec-path`, with GIT_PROJECT_ROOT and GIT_HTTP_EXPORT_ALL=1)
// sees it: no credentials and wrong credentials both get 401 with a
// WWW-Authenticate challenge. Pushes are refused (http.receivepack=false);
// the stack writes the repositories on disk.
//
//	githttps -cert CRT -key KEY -root DIR -token-file FILE [-user x-access-token] [-addr 127.0.0.1:443]
//
// The default address is 127.0.0.1:443 (GIT_HTTPS_PORT overrides the port):
// the go command fetches a module path such as 127.0.0.1/privmod.git with
// `git ls-remote https://127.0.0.1/privmod.git`, always on port 443. Only
// loopback addresses are accepted. The token file is read on every request,
// so replacing it takes effect without a restart.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const realm = "buildsvc-git"

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("githttps: ")

	port := os.Getenv("GIT_HTTPS_PORT")
	if port == "" {
		port = "443"
	}
	addr := flag.String("addr", net.JoinHostPort("127.0.0.1", port), "listen address (loopback only)")
	certFile := flag.String("cert", "", "TLS certificate (PEM)")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	root := flag.String("root", "", "directory of bare repositories (GIT_PROJECT_ROOT)")
	user := flag.String("user", "x-access-token", "basic auth user name")
	tokenFile := flag.String("token-file", "", "file holding the basic auth password (the token)")
	flag.Parse()
	if flag.NArg() != 0 || *certFile == "" || *keyFile == "" || *root == "" || *tokenFile == "" || *user == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*addr, *certFile, *keyFile, *root, *user, *tokenFile); err != nil {
		log.Fatal(err)
	}
}

func run(addr, certFile, keyFile, root, user, tokenFile string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: only loopback IP addresses are allowed", addr)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return fmt.Errorf("-root %s is not a directory", root)
	}
	if _, err := readToken(tokenFile); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("loading the TLS key pair: %v", err)
	}
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return fmt.Errorf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return fmt.Errorf("git http-backend: %v", err)
	}

	cgiHandler := &cgi.Handler{
		Path: backend,
		Dir:  root,
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			// Only what is set here: no system or global git config.
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http.receivepack",
			"GIT_CONFIG_VALUE_0=false",
		},
		Stderr: os.Stderr,
	}
	h := &authHandler{user: user, tokenFile: tokenFile, next: cgiHandler}

	srv := &http.Server{
		Addr:              addr,
		Handler:           logRequests(h),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
		},
		ErrorLog: log.Default(),
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %v", err)
	}
	log.Printf("serving %s on https://%s (user %q, token from %s)", root, ln.Addr(), user, tokenFile)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Print("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %v", err)
	}
	tok := strings.TrimRight(string(b), "\r\n")
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// authHandler passes a request on only with the right basic auth credentials.
type authHandler struct {
	user, tokenFile string
	next            http.Handler
}

func (a *authHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	if !ok {
		challenge(w, "authentication required")
		return
	}
	tok, err := readToken(a.tokenFile)
	if err != nil {
		log.Print(err)
		http.Error(w, "server misconfigured", http.StatusInternalServerError)
		return
	}
	if !equal(u, a.user) || !equal(p, tok) {
		challenge(w, "wrong credentials")
		return
	}
	a.next.ServeHTTP(w, r)
}

// equal compares in constant time (for strings of any length).
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func challenge(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", realm))
	http.Error(w, msg, http.StatusUnauthorized)
}

// statusWriter records the status code for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs one line per request: never the credentials, only
// whether there were any.
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		_, _, hasAuth := r.BasicAuth()
		log.Printf("%s %s %s %d auth=%v %v", r.RemoteAddr, r.Method, r.URL.Path, sw.status, hasAuth, time.Since(start).Round(time.Millisecond))
	})
}
