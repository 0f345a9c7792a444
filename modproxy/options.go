package modproxy

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults used by [New] when no option overrides them.
const (
	// DefaultUpstream is the GOPROXY list the proxy fetches from.
	DefaultUpstream = "https://proxy.golang.org,direct"
	// DefaultGoSumDB is the checksum database upstream files are verified against.
	DefaultGoSumDB = "sum.golang.org"
)

// minKeyLen is the shortest HMAC key [WithKey] accepts.
const minKeyLen = 16

// Option configures a [Proxy] built by [New].
type Option func(*options)

// options holds everything [New] can be told; defaults are set in defaultOptions only.
type options struct {
	upstream   string
	goSumDB    string
	goNoSumDB  string
	goPrivate  string
	key        []byte
	maxBytes   int64
	maxAge     time.Duration
	registerer prometheus.Registerer
	logger     *slog.Logger
	goBinary   string
	transport  http.RoundTripper
	now        func() time.Time // test seam
}

func defaultOptions() options {
	return options{
		upstream:  DefaultUpstream,
		goSumDB:   DefaultGoSumDB,
		logger:    slog.New(slog.DiscardHandler),
		goBinary:  "go",
		transport: http.DefaultTransport,
		now:       time.Now,
	}
}

// validate rejects option values that would only fail later, at the first request.
func (o *options) validate() error {
	if o.upstream == "" {
		return errors.New("modproxy: empty upstream GOPROXY")
	}
	if o.goSumDB == "" {
		return errors.New("modproxy: empty GOSUMDB (use \"off\" to disable verification explicitly)")
	}
	if o.key != nil && len(o.key) < minKeyLen {
		return fmt.Errorf("modproxy: HMAC key of %d bytes, need at least %d", len(o.key), minKeyLen)
	}
	if o.maxBytes < 0 || o.maxAge < 0 {
		return errors.New("modproxy: negative cache limit")
	}
	if o.goBinary == "" {
		return errors.New("modproxy: empty go binary path")
	}
	if o.transport == nil {
		return errors.New("modproxy: nil transport")
	}
	if o.logger == nil {
		return errors.New("modproxy: nil logger")
	}
	if o.key == nil {
		o.key = make([]byte, 32)
		if _, err := rand.Read(o.key); err != nil {
			return fmt.Errorf("modproxy: random key: %w", err)
		}
	}
	return nil
}

// WithUpstream sets the GOPROXY list the proxy fetches missing modules from, in the go
// command's syntax (for example "https://proxy.golang.org,direct"). Default [DefaultUpstream].
func WithUpstream(goproxy string) Option { return func(o *options) { o.upstream = goproxy } }

// WithGoSumDB sets the checksum database (GOSUMDB syntax: "name", "key" or "key URL")
// that every upstream .mod and .zip is verified against before it is cached or served.
// The same database is also proxied under /<scope>/sumdb/<name>/, so a build needs no
// other host. "off" disables verification (and the sumdb proxy). Default [DefaultGoSumDB].
func WithGoSumDB(gosumdb string) Option { return func(o *options) { o.goSumDB = gosumdb } }

// WithGoNoSumDB sets GONOSUMDB for the fetcher: module path patterns not verified
// against the checksum database.
func WithGoNoSumDB(patterns string) Option { return func(o *options) { o.goNoSumDB = patterns } }

// WithGoPrivate sets GOPRIVATE for the fetcher: module path patterns fetched directly
// (not through the upstream proxies) and not verified against the checksum database.
func WithGoPrivate(patterns string) Option { return func(o *options) { o.goPrivate = patterns } }

// WithKey sets the HMAC key behind [Proxy.Credentials] (at least 16 bytes). Replicas
// sharing a key accept each other's credentials. Default: 32 random bytes.
func WithKey(key []byte) Option {
	return func(o *options) { o.key = append([]byte(nil), key...) }
}

// WithLimits bounds the cache for [Proxy.Clean]: least recently used entries are evicted
// while the cache holds more than maxBytes, and entries unused for maxAge are evicted.
// Zero means no bound.
func WithLimits(maxBytes int64, maxAge time.Duration) Option {
	return func(o *options) { o.maxBytes, o.maxAge = maxBytes, maxAge }
}

// WithRegisterer registers the proxy's metrics with r. Default: not registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithLogger sets the logger. Default: logs nothing.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithGoBinary sets the go command used for "direct" fetches (modules not served by any
// upstream proxy, or matched by GOPRIVATE). Default "go" from PATH.
func WithGoBinary(path string) Option { return func(o *options) { o.goBinary = path } }

// WithTransport sets the transport for requests to upstream proxies and checksum
// databases. Default [http.DefaultTransport].
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// withClock replaces time.Now (tests).
func withClock(now func() time.Time) Option { return func(o *options) { o.now = now } }
