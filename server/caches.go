package server

import (
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/credentials"
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
	// BuildStats is what the proxy served the build so far; Forget drops it.
	BuildStats(buildID string) modproxy.Stats
	Forget(buildID string)
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
	}
	if s.cfg.BuildCache != nil {
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
