// Package server is the build service: it validates CreateImage requests,
// resolves git references, runs each build as a BuildKit solve that pushes
// the image, and fans every build's event log out to its watchers.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/policy"
)

// Defaults for Config fields left empty.
const (
	DefaultBuilderImage  = "docker.io/library/golang:alpine"
	DefaultBaseImage     = "gcr.io/distroless/static-debian12:nonroot"
	DefaultMaxConcurrent = 4
	DefaultResolveTimout = 10 * time.Second
	DefaultQueueSize     = 64
	DefaultTimeout       = 30 * time.Minute
	DefaultMaxTimeout    = 2 * time.Hour
	DefaultLogCap        = 32 << 20
)

// Config is the server's configuration. The zero value of every field but
// BuildKit (or BuildKitClient) is usable; New fills in the defaults.
type Config struct {
	// BuildKit is the daemon that runs the builds.
	BuildKit buildkitd.Endpoint
	// BuildKitClient, when set, is used instead of dialling BuildKit (which
	// may then be empty): a fake in unit tests, a pool of daemons. The
	// server owns it from New on and closes it in Close.
	BuildKitClient BuildKitClient
	// BuilderImage has the Go toolchain (golang:alpine or an image made by
	// the offline bootstrap).
	BuilderImage string
	// BaseImage is the runtime image binaries are copied onto, unless a
	// request names another.
	BaseImage string
	// RegistryCredentials are more docker config directories, by name, that
	// tenants' policies may name (policy.Tenant.RegistryCredentials) to
	// use instead of DockerConfigDir.
	RegistryCredentials map[string]string
	// DockerConfigDir holds the config.json whose credentials reach
	// buildkitd for pulls and pushes. Empty means $DOCKER_CONFIG or ~/.docker.
	DockerConfigDir string
	// GoProxy and GoFlags become GOPROXY and GOFLAGS of every go build.
	// User info in a GOPROXY URL (https://user:token@proxy.internal) never
	// goes into a build's environment: it reaches go as a netrc entry in a
	// secret mount.
	GoProxy string
	GoFlags string
	// Provenance attaches BuildKit's SLSA provenance (mode=max) to every
	// build's image, as if each request asked for it; SBOM an SPDX SBOM
	// of every build's binary.
	Provenance, SBOM bool
	// Compression is how an image's new layer is compressed unless the
	// request says otherwise: zstd (the default), gzip, estargz or
	// uncompressed; CompressionLevel its level, 0 for the format's own.
	Compression      string
	CompressionLevel int
	// Credentials are the server's credentials of private git and module
	// hosts, its ssh known hosts, internal CAs and private module settings;
	// nil for none.
	Credentials *credentials.Config
	// Authenticated says every call of a non-public method carries an
	// auth.Identity (the server runs behind auth.Authenticator's
	// interceptors): a call without one is refused. When false, every call
	// acts as an admin of the empty tenant (one user, e.g. on a laptop).
	Authenticated bool
	// Tenants are the tenants' policies (hosts, tags, base images, quotas,
	// rate, wider allow-lists); nil for no per-tenant limits.
	Tenants *policy.Policies
	// AllowBuild widens the allow-lists of build flags, linker flags and
	// environment variables (see package policy) for every request. Each
	// entry lets builds run programs of the repository's choosing: for
	// servers whose every caller is trusted.
	AllowBuild policy.Extra
	// Ulimits are resource limits of every build step (nofile, nproc, ...);
	// none by default.
	Ulimits []llb.Ulimit
	// BuildUser, when set, is the numeric "UID:GID" go build runs as (e.g.
	// "65534:65534"); the builder image needs /tmp writable by it. Empty
	// runs it as root inside its container.
	BuildUser string
	// CgroupParent, when set, is the cgroup parent of every build step, so
	// that the cgroup's memory, CPU and pids limits bound builds. buildkitd
	// must be able to create cgroups under it.
	CgroupParent string
	// PerTenantModuleCache gives each tenant a Go module cache of its own
	// (the build cache always is), at the cost of each tenant downloading
	// every module once.
	PerTenantModuleCache bool
	// CacheNamespace, when set, is added to the ids of the Go module and
	// build cache mounts, so that services sharing one buildkitd keep their
	// caches apart. Letters, digits, '.', '_' and '-', at most 64. Empty
	// uses the stable ids llb.GoModCacheID and llb.GoBuildCacheID.
	CacheNamespace string
	// Builders, when set, gives each build its buildkitd (a pool of
	// workers, WorkerPool, or an ephemeral one per build); nil runs every
	// build on BuildKit's client.
	Builders Builders
	// Shared, when set, is the build queue this server shares with other
	// replicas of the service (see SharedQueue); Store must then be the
	// history they share too. MaxConcurrent and QueueSize are then limits
	// of all the replicas together.
	Shared SharedQueue
	// ModuleProxy, when set, is every build's GOPROXY, reached at
	// ModuleProxyURL (as the download step sees it: https://host:port; the
	// go command sends the netrc credential only over https, to that host
	// and port). Config.GoProxy is then the proxy's
	// upstream, not the builds'.
	ModuleProxy    ModuleProxy
	ModuleProxyURL string
	// BuildCache, when set, backs every build's Go build cache
	// (GOCACHEPROG in the builder image) with a store that outlives
	// buildkitd, scoped like the build cache mount.
	BuildCache BuildCacheStore
	// CleanModuleProxy and CleanBuildCache, when set, run with every
	// cleanup: they bound the module proxy's cache and the build-cache
	// store by their size and age limits.
	CleanModuleProxy, CleanBuildCache StoreCleaner
	// CacheScope says which builds share the Go caches, on buildkitd and in
	// the module proxy and build-cache store: CacheScopeService (the
	// default, also for "") or CacheScopeRepositoryOwner.
	CacheScope string
	// AllowInsecureGit accepts file:// and plain http:// repositories, for
	// local development and tests. Off in production.
	AllowInsecureGit bool
	// MaxConcurrent is how many builds run at once; more wait QUEUED.
	MaxConcurrent int
	// QueueSize is how many builds may wait for a slot; one more request
	// gets RESOURCE_EXHAUSTED.
	QueueSize int
	// DefaultTimeout is how long a build may run when its request says
	// nothing; MaxTimeout caps what a request may ask for.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// LogCap is how many bytes of step output one build's log keeps.
	LogCap int64
	// ResolveTimeout bounds resolving a git reference to a SHA.
	ResolveTimeout time.Duration
	// Cleanup is the policy of the periodic cleanup.
	Cleanup CleanupPolicy
	// Store keeps builds, their events and logs. Required.
	Store history.Store
	// Resolver turns git references into SHAs; nil means RemoteResolver.
	Resolver Resolver
	// Observer is told about every event (metrics); nil for none.
	Observer Observer
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if _, pooled := c.Builders.(*poolBuilders); c.BuildKitClient == nil && !pooled {
		if err := c.BuildKit.Validate(); err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
	}
	if c.BuilderImage == "" {
		c.BuilderImage = DefaultBuilderImage
	}
	if c.BaseImage == "" {
		c.BaseImage = DefaultBaseImage
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.MaxConcurrent < 0 {
		return c, errors.New("config: max concurrent builds must be positive")
	}
	if c.Store == nil {
		return c, errors.New("config: a history store is required")
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = DefaultMaxTimeout
	}
	if c.LogCap == 0 {
		c.LogCap = DefaultLogCap
	}
	if c.Compression == "" {
		c.Compression = DefaultCompression
	}
	if err := c.checkCompressionConfig(); err != nil {
		return c, err
	}
	if c.Cleanup.Interval < 0 || c.Cleanup.KeepDuration < 0 || c.Cleanup.KeepStorage < 0 ||
		c.Cleanup.HistoryMaxAge < 0 || c.Cleanup.HistoryMaxBuilds < 0 {
		return c, errors.New("config: cleanup settings must not be negative")
	}
	if c.QueueSize < 0 || c.DefaultTimeout < 0 || c.MaxTimeout < 0 || c.LogCap < 0 {
		return c, errors.New("config: queue size, timeouts and log cap must not be negative")
	}
	c.DefaultTimeout = min(c.DefaultTimeout, c.MaxTimeout)
	if c.Resolver == nil {
		c.Resolver = RemoteResolver{}
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = DefaultResolveTimout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Tenants != nil {
		names := []string{c.Tenants.Defaults.RegistryCredentials}
		for _, t := range c.Tenants.Tenants {
			names = append(names, t.RegistryCredentials)
		}
		for _, n := range names {
			if _, ok := c.RegistryCredentials[n]; !ok && n != "" && n != policy.NoCredentials {
				return c, fmt.Errorf("config: tenants: registry_credentials %q is not one of the server's registry-credentials", n)
			}
		}
	}
	if _, _, err := llb.ParseUser(c.BuildUser); err != nil {
		return c, fmt.Errorf("config: build user: %w", err)
	}
	if !validCacheScope(c.CacheScope) {
		return c, fmt.Errorf("config: cache scope %.70q: want %q or %q", c.CacheScope, CacheScopeService, CacheScopeRepositoryOwner)
	}
	if !validCacheNamespace(c.CacheNamespace) {
		return c, fmt.Errorf("config: cache namespace %.70q: only letters, digits, '.', '_' and '-', at most 64", c.CacheNamespace)
	}
	for what, ref := range map[string]string{"builder image": c.BuilderImage, "base image": c.BaseImage} {
		if _, err := parseImageRef(ref); err != nil {
			return c, fmt.Errorf("config: %s: %w", what, err)
		}
	}
	return c, nil
}

func validCacheNamespace(ns string) bool {
	if len(ns) > 64 {
		return false
	}
	for _, r := range ns {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// cacheIDs returns the ids of the Go module and build cache mounts of a
// build of tenant, empty for llb's defaults. The build cache is the
// tenant's own: a build can only ever read compiled packages that builds
// of its own tenant wrote (and, through llb.CacheScopeEnv, only BuildKit
// results of its own tenant's go build steps). The module cache is shared
// unless PerTenantModuleCache: only the Go toolchain writes it, and it
// verifies every module against go.sum and the checksum database.
func (c Config) cacheIDs(tenant string) (mod, build string) {
	suffix := ""
	if c.CacheNamespace != "" {
		suffix = "-" + c.CacheNamespace
	}
	tenantSuffix := suffix
	if tenant != "" {
		tenantSuffix += "-tenant-" + tenant
	}
	if c.PerTenantModuleCache {
		suffix = tenantSuffix
	}
	if suffix != "" {
		mod = llb.GoModCacheID + suffix
	}
	if tenantSuffix != "" {
		build = llb.GoBuildCacheID + tenantSuffix
	}
	return mod, build
}
