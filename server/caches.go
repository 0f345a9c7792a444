package server

import (
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/modproxy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ModuleProxy is the service's module proxy as builds use it (package
// modproxy's Proxy): the GOPROXY of their download step, which keeps every
// module it fetched for every later build of the same cache scope, on any
// buildkitd.
type ModuleProxy interface {
	// Credentials are the basic-auth credentials of one build for the
	// proxy's scope: the build sends them from its netrc, so that nothing
	// secret is in its GOPROXY (the step's cache key).
	Credentials(scope, buildID string) (username, password string)
	// BuildStats is what the proxy served the build so far; Forget drops it
	// and what AllowPrivate allowed.
	BuildStats(buildID string) modproxy.Stats
	Forget(buildID string)
	// FetchesPrivate tells whether the proxy can fetch GOPRIVATE modules
	// from their hosts; AllowPrivate lets one build's requests do so, with
	// the build's credentials and host policy.
	FetchesPrivate() bool
	AllowPrivate(buildID string, priv modproxy.Private) error
}

// BuildCacheStore is the Go build-cache store that outlives a buildkitd:
// go build's GOCACHEPROG helper asks it on a miss of the step's cache
// mount and fills it on a put, through a socket forwarded from the build's
// session (package buildcache).
type BuildCacheStore = buildcache.Store

// buildCaches is what one build gets of the service's caches, and its
// use of them.
type buildCaches struct {
	// goproxy is the download step's GOPROXY, empty without a proxy.
	goproxy string
	// private says the proxy fetches the build's GOPRIVATE modules too:
	// the download step asks it for them (GONOPROXY=none).
	private bool
	// netrc is the proxy's credential for the download step's netrc.
	netrc *credentials.Module
	// sockets are forwarded into build steps through the session.
	sockets []credentials.Socket
	// stats of the build-cache store's socket; nil without a store.
	stats *buildcache.Stats
	stop  func()
}

// caches sets up the service's caches for build b, whose cache mounts
// have the ids modID and buildID. Release them with close.
func (s *Server) caches(b *build, modID, buildID string) *buildCaches {
	c := &buildCaches{stop: func() {}}
	if s.cfg.ModuleProxy != nil {
		scope := storeScope(modID)
		user, pass := s.cfg.ModuleProxy.Credentials(scope, b.id)
		c.goproxy = strings.TrimRight(s.proxyURL.String(), "/") + "/" + scope
		// The go command looks netrc machines up by host and port.
		c.netrc = &credentials.Module{Host: s.proxyURL.Host, Username: user, Password: pass, From: "the service's module proxy"}
		c.private = s.allowPrivate(b)
	}
	if s.cfg.BuildCache != nil && b.verify == nil { // a verification's rebuild starts from nothing
		c.stats = new(buildcache.Stats)
		l := newConnListener()
		srv := &http.Server{
			// The hints are the program's: the entries its last build used,
			// which the helper fetches ahead.
			Handler: buildcache.Handler(s.cfg.BuildCache, storeScope(buildID), c.stats,
				buildcache.WithHints(b.req.Repo+"\x00"+b.req.Dir+"\x00"+b.req.Package)),
			ReadHeaderTimeout: time.Minute,
		}
		go func() { _ = srv.Serve(l) }()
		c.sockets = append(c.sockets, credentials.Socket{ID: llb.BuildCacheSSHID, Serve: l.serve})
		c.stop = func() { _ = srv.Close() }
	}
	return c
}

// allowPrivate lets the module proxy fetch b's GOPRIVATE modules, as its
// download step would: with b's module credentials (its netrc, before
// the proxy's own entry is added), the server's CA bundle, and every
// connection under b's host policy (the server's and its tenant's
// allowance, as for the server's own git lookups). Not when the request
// names GONOPROXY modules (those it wants fetched by the step itself),
// nor when the proxy cannot fetch them (no go or git on its host): the
// step then fetches them from their hosts, as without the proxy.
func (s *Server) allowPrivate(b *build) bool {
	c := s.credentialsConfig()
	patterns := strings.Trim(joinList(c.GoPrivate, b.req.GoPrivate), ",")
	if patterns == "" || joinList(c.GoNoProxy, b.req.GoNoProxy) != "" || !s.cfg.ModuleProxy.FetchesPrivate() {
		return false
	}
	dialer := egress.For("https", b.allow).Dialer()
	err := s.cfg.ModuleProxy.AllowPrivate(b.id, modproxy.Private{
		Patterns: patterns,
		Netrc:    b.creds.Netrc(),
		CABundle: c.CABundle,
		Dial:     dialer.DialContext,
	})
	if err != nil {
		s.cfg.Logger.Warn("module proxy: private modules left to the download step", "build", b.id, "err", err)
		return false
	}
	return true
}

// close stops serving the build's store socket and forgets its proxy stats.
func (c *buildCaches) close(s *Server, b *build) {
	c.stop()
	if s.cfg.ModuleProxy != nil {
		s.cfg.ModuleProxy.Forget(b.id)
	}
}

// usage is what build b took from and gave to the caches, or nil when the
// server runs neither.
func (c *buildCaches) usage(s *Server, b *build) *buildv1.CacheUsage {
	if s.cfg.ModuleProxy == nil && c.stats == nil {
		return nil
	}
	u := &buildv1.CacheUsage{}
	if s.cfg.ModuleProxy != nil {
		st := s.cfg.ModuleProxy.BuildStats(b.id)
		u.ModuleHits, u.ModuleMisses = int64(st.Hits), int64(st.Misses)
		u.ModuleBytesCached, u.ModuleBytesFetched = st.BytesFromCache, st.BytesFromUpstream
		u.ModuleFetchTime = durationpb.New(st.UpstreamTime)
	}
	if c.stats != nil {
		st := c.stats.Snapshot()
		u.BuildCacheHits, u.BuildCacheMisses, u.BuildCachePuts = st.Hits, st.Misses, st.Puts
		u.BuildCacheBytesRead, u.BuildCacheBytesWritten = st.BytesRead, st.BytesWritten
		u.BuildCacheTime = durationpb.New(st.Duration)
	}
	return u
}
