package modproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/goproxy/goproxy"
	"golang.org/x/mod/module"
)

// Private is what one build may fetch through the proxy straight from
// its hosts (its GOPRIVATE modules), and how: the proxy fetches them as
// the build's download step would, with the build's credentials, and
// keeps them in the build's scope, so that a later build of the scope on
// any buildkitd gets them from the proxy.
type Private struct {
	// Patterns are the build's GOPRIVATE: the module path patterns
	// fetched from their hosts, never from upstream, and never checked
	// against the checksum database (the build's go.sum is their check).
	Patterns string
	// Netrc is the netrc the go command and git fetch them with.
	Netrc []byte
	// CABundle, PEM, is trusted besides the system's roots.
	CABundle []byte
	// Dial makes every connection of the fetch (git's and the go
	// command's, through a CONNECT proxy of the fetch's own): the build's
	// host policy. Nil refuses every connection.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// AllowPrivate lets the requests of buildID fetch the modules matching
// priv.Patterns from their hosts with priv's credentials, until
// Forget(buildID). Modules of other paths still come from upstream.
func (p *Proxy) AllowPrivate(buildID string, priv Private) error {
	if strings.Trim(priv.Patterns, ", ") == "" {
		return errors.New("modproxy: private fetches need GOPRIVATE patterns")
	}
	if strings.ContainsAny(priv.Patterns, " \t\n\r") {
		return fmt.Errorf("modproxy: GOPRIVATE %q has white space", priv.Patterns)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.private == nil {
		p.private = map[string]Private{}
	}
	p.private[buildID] = priv
	return nil
}

// FetchesPrivate tells whether the proxy can fetch private modules: the
// go command and git are on its PATH.
func (p *Proxy) FetchesPrivate() bool {
	if _, err := lookPath(p.opts.goBinary); err != nil {
		return false
	}
	_, err := lookPath("git")
	return err == nil
}

// privateFor is the private fetch of path for buildID, if it has one
// that matches.
func (p *Proxy) privateFor(buildID, path string) (Private, bool) {
	p.mu.Lock()
	priv, ok := p.private[buildID]
	p.mu.Unlock()
	return priv, ok && module.MatchPrefixPatterns(priv.Patterns, path)
}

// privateFetch runs fn with a GoFetcher that fetches straight from the
// hosts as priv says: in a directory of its own (0700, removed after)
// holding the netrc and the CA bundle, every connection through a CONNECT
// proxy that dials with priv.Dial, git limited to HTTPS, and a module
// cache of the scope's own. A failure is a not-found answer with the go
// command's error, which the build's go command prints.
func (p *Proxy) privateFetch(ctx context.Context, scope string, priv Private, fn func(goproxy.Fetcher) error) error {
	dir, err := os.MkdirTemp(p.tmpDir, "private-")
	if err != nil {
		return fmt.Errorf("modproxy: %w", err)
	}
	defer os.RemoveAll(dir)
	home := filepath.Join(dir, "home")
	caDir := filepath.Join(dir, "ca")
	for _, d := range []string{home, caDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("modproxy: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(home, ".netrc"), priv.Netrc, 0o600); err != nil {
		return fmt.Errorf("modproxy: %w", err)
	}
	if len(priv.CABundle) > 0 {
		if err := os.WriteFile(filepath.Join(caDir, "ca.pem"), priv.CABundle, 0o600); err != nil {
			return fmt.Errorf("modproxy: %w", err)
		}
	}
	connect, err := startConnectProxy(priv.Dial)
	if err != nil {
		return err
	}
	defer connect.close()

	fetch := filepath.Join(p.dir, "fetch", "private", scope)
	proxyURL := "http://" + connect.addr
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"GOPROXY=direct",
		"GOSUMDB=off",
		"GOPRIVATE=" + priv.Patterns,
		"GONOSUMDB=" + priv.Patterns,
		"GOVCS=*:git",
		"GOMODCACHE=" + filepath.Join(fetch, "modcache"),
		"GOPATH=" + filepath.Join(fetch, "gopath"),
		"GOCACHE=" + filepath.Join(fetch, "gocache"),
		"GOENV=off",
		"GOTOOLCHAIN=local",
		"GOTELEMETRY=off",
		"GOFLAGS=-mod=mod",
		"HOME=" + home,
		"NETRC=" + filepath.Join(home, ".netrc"),
		// Every connection through the CONNECT proxy, the build's host
		// policy; git over HTTPS only (no ssh or git:// that would not).
		"HTTPS_PROXY=" + proxyURL, "https_proxy=" + proxyURL,
		"HTTP_PROXY=" + proxyURL, "http_proxy=" + proxyURL,
		"ALL_PROXY=" + proxyURL, "NO_PROXY=", "no_proxy=",
		"GIT_ALLOW_PROTOCOL=https",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_SSH_COMMAND=false",
	}
	if len(priv.CABundle) > 0 {
		// As the download step: Go reads SSL_CERT_DIR's directories and
		// still the system's bundle; git's sslCAPath comes on top of its
		// bundle.
		env = append(env, "SSL_CERT_DIR="+caDir+":/etc/ssl/certs",
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.sslCAPath", "GIT_CONFIG_VALUE_0="+caDir)
	}
	gf := &goproxy.GoFetcher{Env: env, GoBin: p.opts.goBinary, TempDir: p.tmpDir}
	if err := fn(gf); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &privateError{err: err}
	}
	return nil
}

// privateError is a failed private fetch: a not-found answer (goproxy
// sends its message), so that the build's go command says why.
type privateError struct{ err error }

func (e *privateError) Error() string {
	return "fetching a GOPRIVATE module with the build's credentials: " + e.err.Error()
}
func (e *privateError) Unwrap() error { return e.err }
func (e *privateError) Is(target error) bool {
	return target == fs.ErrNotExist
}

// lookPath is exec.LookPath, a variable for tests.
var lookPath = exec.LookPath

// connectProxy is an HTTP CONNECT proxy on loopback for one fetch: every
// tunnel it opens is dialled with its dial function.
type connectProxy struct {
	addr string
	srv  *http.Server

	mu    sync.Mutex
	conns []net.Conn // both ends of every tunnel, closed with the proxy
}

// track keeps conns to close with the proxy; false if it is closed.
func (c *connectProxy) track(conns ...net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		return false
	}
	c.conns = append(c.conns, conns...)
	return true
}

func startConnectProxy(dial func(ctx context.Context, network, address string) (net.Conn, error)) (*connectProxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("modproxy: connect proxy: %w", err)
	}
	c := &connectProxy{addr: lis.Addr().String(), conns: []net.Conn{}}
	c.srv = &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			// Plain http is not proxied: private modules come over HTTPS.
			http.Error(w, "only CONNECT", http.StatusMethodNotAllowed)
			return
		}
		if dial == nil {
			http.Error(w, "no connections allowed", http.StatusForbidden)
			return
		}
		up, err := dial(r.Context(), "tcp", r.Host)
		if err != nil {
			http.Error(w, "refused by the build's host policy", http.StatusForbidden)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			http.Error(w, "no hijacking", http.StatusInternalServerError)
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		if !c.track(conn, up) {
			conn.Close()
			up.Close()
			return
		}
		_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() {
			_, _ = io.Copy(up, buf)
			closeWrite(up)
		}()
		go func() {
			_, _ = io.Copy(conn, up)
			conn.Close()
			up.Close()
		}()
	})}
	go func() { _ = c.srv.Serve(lis) }()
	return c, nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// close stops the proxy and its tunnels.
func (c *connectProxy) close() {
	_ = c.srv.Close()
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, conn := range conns {
		_ = conn.Close()
	}
}
