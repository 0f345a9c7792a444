// Package modproxy is the build service's own Go module proxy.
//
// The download step of every build uses it as GOPROXY, so a module version is fetched
// from outside once per fleet, not once per (disposable) builder. The proxy protocol,
// the fetching and the checksum-database verification are github.com/goproxy/goproxy's;
// this package adds what a multi-tenant service needs around it:
//
//   - scopes: the handler serves /<scope>/<module proxy path> and every scope has its
//     own cache namespace on disk, so one tenant can never read or poison another's
//     cached modules;
//   - per-build credentials: HTTP basic auth derived by HMAC from (scope, build id),
//     handed to a build in a netrc file (see [Proxy.Credentials], [Proxy.Netrc]);
//   - verification is never weakened: upstream .mod and .zip files are checked against
//     the checksum database (unless GONOSUMDB/GOPRIVATE match) before they are cached,
//     and the checksum database itself is proxied under /<scope>/sumdb/;
//   - per-build statistics and Prometheus metrics;
//   - a bounded cache: [Proxy.Clean] evicts by size (least recently used) and by age.
//
// The go command sends netrc credentials only over https, so the handler must be
// served over TLS to the builds.
package modproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goproxy/goproxy"
	"golang.org/x/mod/sumdb/note"
)

// scopeRE is the syntax of a scope name.
var scopeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidScope reports whether name can be used as a cache scope.
func ValidScope(name string) bool { return scopeRE.MatchString(name) }

// Proxy is a caching, scoped, authenticated Go module proxy. Create it with [New],
// serve [Proxy.Handler], and call [Proxy.Close] when done.
type Proxy struct {
	opts     options
	dir      string // root; the cache is under dir/scopes/<scope>/
	scopeDir string
	tmpDir   string
	gp       *goproxy.Goproxy
	cacher   *cacher
	locks    keyLocks
	metrics  *metrics
	usage    atomic.Int64 // bytes in the cache, as far as this process knows

	mu      sync.Mutex
	builds  map[string]*Stats
	private map[string]Private // by build: what AllowPrivate let it fetch

	closed    atomic.Bool
	transport *countingTransport
}

// New returns a proxy caching under dir (created if missing). Invalid options fail here.
func New(dir string, opts ...Option) (*Proxy, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("modproxy: empty cache directory")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("modproxy: cache directory: %w", err)
	}
	sumdbs, err := proxiedSumDBs(o.goSumDB, o.upstream)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		opts:     o,
		dir:      dir,
		scopeDir: filepath.Join(dir, "scopes"),
		tmpDir:   filepath.Join(dir, "tmp"),
		builds:   make(map[string]*Stats),
	}
	// Temporary files of a previous process are garbage.
	if err := os.RemoveAll(p.tmpDir); err != nil {
		return nil, fmt.Errorf("modproxy: clear temp dir: %w", err)
	}
	for _, d := range []string{p.scopeDir, p.tmpDir, filepath.Join(dir, "fetch", "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("modproxy: %w", err)
		}
	}
	p.metrics = newMetrics(func() float64 { return float64(p.usage.Load()) })
	if o.registerer != nil {
		if err := p.metrics.register(o.registerer); err != nil {
			return nil, fmt.Errorf("modproxy: register metrics: %w", err)
		}
	}
	p.transport = &countingTransport{next: o.transport, requests: p.metrics.upstreamRequests}
	p.cacher = &cacher{p: p}
	p.gp = &goproxy.Goproxy{
		Fetcher: &fetcher{
			p: p,
			next: &goproxy.GoFetcher{
				Env:       p.fetcherEnv(),
				GoBin:     o.goBinary,
				TempDir:   p.tmpDir,
				Transport: p.transport,
			},
		},
		ProxiedSumDBs: sumdbs,
		Cacher:        p.cacher,
		TempDir:       p.tmpDir,
		Transport:     p.transport,
		Logger:        o.logger,
	}
	if _, _, err := p.DiskUsage(); err != nil {
		return nil, err
	}
	return p, nil
}

// fetcherEnv is the whole environment of goproxy's GoFetcher: it reads GOPROXY, GOSUMDB,
// GONOSUMDB and GOPRIVATE from it, and runs the go command with the rest for direct fetches.
func (p *Proxy) fetcherEnv() []string {
	fetch := filepath.Join(p.dir, "fetch")
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"GOPROXY=" + p.opts.upstream,
		"GOSUMDB=" + p.opts.goSumDB,
		"GONOSUMDB=" + p.opts.goNoSumDB,
		"GOPRIVATE=" + p.opts.goPrivate,
		"GOMODCACHE=" + filepath.Join(fetch, "modcache"),
		"GOPATH=" + filepath.Join(fetch, "gopath"),
		"GOCACHE=" + filepath.Join(fetch, "gocache"),
		"GOENV=off",
		"GOTOOLCHAIN=local",
		"GOTELEMETRY=off",
		"GOFLAGS=-mod=mod",
		// Direct fetches are anonymous: git gets an empty HOME, not the server's, so no
		// tenant can make the proxy fetch (into its scope) what only the server may read.
		"HOME=" + filepath.Join(fetch, "home"),
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
	}
	return env
}

// proxiedSumDBs turns a GOSUMDB value into goproxy's ProxiedSumDBs entries.
// A checksum database without a URL of its own is reached as the go command
// reaches it: through the first upstream proxy (<proxy>/sumdb/<name>, which
// proxy.golang.org serves), else at its own address, so that the proxy's
// host needs no route to the database's.
func proxiedSumDBs(gosumdb, upstream string) ([]string, error) {
	f := strings.Fields(gosumdb)
	switch {
	case len(f) == 0 || len(f) > 2:
		return nil, fmt.Errorf("modproxy: invalid GOSUMDB %q", gosumdb)
	case f[0] == "off":
		return nil, nil
	}
	name := f[0]
	if strings.Contains(name, "+") {
		v, err := note.NewVerifier(name)
		if err != nil {
			return nil, fmt.Errorf("modproxy: invalid GOSUMDB key: %w", err)
		}
		name = v.Name()
	}
	if len(f) == 2 {
		return []string{name + " " + f[1]}, nil
	}
	if first, _, _ := strings.Cut(strings.Split(upstream, ",")[0], "|"); strings.HasPrefix(first, "https://") || strings.HasPrefix(first, "http://") {
		return []string{name + " " + strings.TrimRight(first, "/") + "/sumdb/" + name}, nil
	}
	return []string{name}, nil
}

// Handler serves /<scope>/<module proxy protocol path>, including /<scope>/sumdb/<name>/...
// Every request needs basic auth from [Proxy.Credentials] for that scope.
func (p *Proxy) Handler() http.Handler { return http.HandlerFunc(p.serveHTTP) }

func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if p.closed.Load() {
		http.Error(w, "module proxy closed", http.StatusServiceUnavailable)
		return
	}
	scope, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || !ValidScope(scope) || rest == "" {
		http.NotFound(w, r)
		return
	}
	buildID, ok := p.authenticate(r, scope)
	if !ok {
		p.metrics.requests.WithLabelValues(resultUnauthorized).Inc()
		w.Header().Set("WWW-Authenticate", `Basic realm="buildsvc module proxy", charset="UTF-8"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}

	st := &reqState{scope: scope, buildID: buildID}
	r2 := r.Clone(withState(r.Context(), st))
	r2.URL.Path, r2.URL.RawPath = "/"+rest, ""
	r2.Header.Del("Authorization")
	rw := &countingWriter{ResponseWriter: w}
	start := p.opts.now()
	if !p.serveSumDBCache(rw, r2, st, rest) {
		p.gp.ServeHTTP(rw, r2)
	}
	if st.sumdbFetched {
		st.upstreamTime += p.opts.now().Sub(start)
	}
	p.record(st, rw)
}

// Close stops serving (later requests get 503), drops idle upstream connections and
// unregisters the metrics. The cache stays on disk for the next [New].
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if ci, ok := p.opts.transport.(interface{ CloseIdleConnections() }); ok && p.opts.transport != http.DefaultTransport {
		ci.CloseIdleConnections()
	}
	if p.opts.registerer != nil {
		p.metrics.unregister(p.opts.registerer)
	}
	return nil
}

// reqState follows one authenticated request through goproxy, the fetcher and the cacher.
// A request that did not need upstream is a hit. One request is served by one goroutine,
// so it needs no lock.
type reqState struct {
	scope, buildID string

	fetched       bool  // the fetcher got it from upstream
	sumdbFetched  bool  // a checksum database answer came from upstream
	downloadBytes int64 // bytes of .info, .mod and .zip the fetcher downloaded
	upstreamTime  time.Duration
	skipPut       bool // the fetcher returned files already in the cache
}

type stateKey struct{}

func withState(ctx context.Context, st *reqState) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateFrom(ctx context.Context) (*reqState, error) {
	st, ok := ctx.Value(stateKey{}).(*reqState)
	if !ok {
		return nil, errors.New("modproxy: request without scope")
	}
	return st, nil
}

// countingWriter records the status and the body bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// countingTransport counts requests sent upstream.
type countingTransport struct {
	next     http.RoundTripper
	requests interface{ Inc() }
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.requests.Inc()
	return t.next.RoundTrip(r)
}
