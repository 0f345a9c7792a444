// Package llb turns a build spec into a BuildKit LLB definition: the git
// source at one commit, `go build` in a builder image with the Go caches
// mounted, and the binary copied onto a runtime base image.
//
// It is a pure package: no daemon, no network, no file system. The caller
// resolves image configs and commit SHAs first and puts them in the Spec, so
// the same Spec always gives the same definition, byte for byte.
package llb

import (
	"time"

	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Stable ids of the cache mounts every build shares unless its Spec names
// others. The Go module and build caches are safe for concurrent use, so the
// mounts use shared sharing. Changing an id makes every build start cold.
const (
	GoModCacheID   = "buildsvc-gomodcache"
	GoBuildCacheID = "buildsvc-gocache"
)

// CacheScopeEnv is the variable of `go build`'s environment that names the
// cache mount ids when a Spec sets its own (see Spec.ModCacheID). Go does
// not read it and it is not recorded in the binary.
const CacheScopeEnv = "BUILDSVC_CACHE_SCOPE"

// ModulesGenerationEnv is the variable of the download step's environment
// that carries Spec.ModulesGeneration: a new generation makes BuildKit run
// the download step again instead of reusing its cached result.
const ModulesGenerationEnv = "BUILDSVC_MODULES_GENERATION"

// Ids of the session secrets and ssh agent a build's graph refers to. The
// values are never in the graph: the server's session serves them (see
// package credentials).
const (
	// NetrcSecretID is the netrc file of the download step, mounted at
	// NetrcPath: credentials for Go module hosts.
	NetrcSecretID = "buildsvc.netrc"
	// SecretEnvIDPrefix plus a variable's name is the id of a secret
	// environment variable of the build steps.
	SecretEnvIDPrefix = "buildsvc.env."
	// GitSSHID is the id of the forwarded ssh agent BuildKit's git source
	// uses for an ssh repository.
	GitSSHID = "buildsvc.git"
)

// Paths inside the builder container.
const (
	SourceDir = "/src"
	// ModulesDir is where the download step sees the repository's module
	// files (every go.mod, go.sum, go.work and go.work.sum, nothing else).
	ModulesDir = "/modules"
	// downloadedDir is where the compile step mounts what the download step
	// left of ModulesDir: nothing reads it, it orders the two steps.
	downloadedDir  = "/tmp/buildsvc-downloaded"
	OutputDir      = "/out"
	GoModCachePath = "/go/pkg/mod"
	GoCachePath    = "/root/.cache/go-build"
	// UserGoCachePath is the build cache's path when go build runs as
	// Spec.BuildUser, who cannot enter /root; HOME is then UserHome.
	UserGoCachePath = "/var/cache/buildsvc/go-build"
	UserHome        = "/tmp"
	// NetrcPath is where the download step (HOME=/root) has its netrc: Go
	// and git's libcurl both read $HOME/.netrc.
	NetrcPath = "/root/.netrc"
	// CADir holds the server's CA bundle (CAFile) in the download step; Go
	// reads it through SSL_CERT_DIR and git through http.sslCAPath, both in
	// addition to the builder image's own roots.
	CADir  = "/etc/buildsvc/ca"
	CAFile = "internal-ca.pem"
)

// Labels the service always sets on the image.
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelRevision = "org.opencontainers.image.revision"
)

// Ulimit is one resource limit of the build steps.
type Ulimit struct {
	// Name is the limit's name as in ulimit(1) and BuildKit: nofile, nproc,
	// fsize, core, ...
	Name       string
	Soft, Hard int64
}

// Image is an image reference with its config, resolved by the caller.
type Image struct {
	// Ref is the image reference, ideally pinned by digest.
	Ref string
	// Config is the image's config JSON (an OCI image config), or nil if
	// unknown. The builder's ENV is taken from it; the runtime image's
	// config is the start of the pushed image's config.
	Config []byte
}

// Spec is one validated build. Every field is already checked and
// defaulted by the caller; Build only converts.
type Spec struct {
	// Repo is the git URL BuildKit fetches, without credentials.
	Repo string
	// Commit is the full commit SHA to build.
	Commit string
	// Dir is the module directory inside the repository, cleaned, "." for
	// the root.
	Dir string
	// Package is the Go package to build, relative to Dir, e.g. "./cmd/app".
	Package string
	// Binary is the file name of the built program in the image.
	Binary string
	// BuildFlags are extra `go build` flags, in order.
	BuildFlags []string
	// LDFlags is the value of -ldflags; empty for none.
	LDFlags string
	// Env is extra environment for `go build`.
	Env map[string]string
	// GoProxy is GOPROXY of the download step (`go mod download`); empty
	// leaves the builder image's value. The compile step always has
	// GOPROXY=off: it has no network.
	GoProxy string
	// GoFlags is GOFLAGS of the compile step (`go build`); empty leaves the
	// builder image's value.
	GoFlags string
	// ModulesGeneration, when not 0, makes the download step new (see
	// ModulesGenerationEnv): the caller bumps it when the module cache lost
	// modules that a cached download step had fetched.
	ModulesGeneration int64
	// Ulimits are resource limits of both build steps, e.g. nofile; none by
	// default.
	Ulimits []Ulimit
	// BuildUser, when set, is the numeric "UID:GID" the compile step runs
	// as (the download step, which alone writes the module cache, runs as
	// root). Its build cache and output directory are made for that user;
	// the binary in the image is root's. Empty runs the step as root.
	BuildUser string
	// CgroupParent, when set, is the cgroup parent of both build steps (for
	// memory, CPU and pids limits; buildkitd must run with a cgroup
	// driver that has it).
	CgroupParent string
	// BuildPlatform is the platform the builder runs on (the daemon's).
	BuildPlatform ocispecs.Platform
	// Platform is the platform of the image (cross-compiled, no emulation).
	Platform ocispecs.Platform
	// Builder is the image with the Go toolchain.
	Builder Image
	// Base is the runtime base image.
	Base Image
	// Labels are extra image labels.
	Labels map[string]string
	// ModCacheID and BuildCacheID are the ids of the cache mounts of the Go
	// module cache and the Go build cache; empty for GoModCacheID and
	// GoBuildCacheID. Builds with one id share that cache. BuildKit leaves
	// cache mount ids out of a step's cache key, so other ids also go into
	// `go build`'s environment as CacheScopeEnv: builds that do not share
	// caches do not share BuildKit's cached result of the step either.
	ModCacheID   string
	BuildCacheID string
	// KnownHosts, for an ssh repository, is the known_hosts content the host's
	// key is checked against (BuildKit's git fetches through the session's
	// ssh agent GitSSHID). Required for ssh: without it BuildKit would scan
	// the host's key itself.
	KnownHosts string
	// Netrc makes the download step mount the session secret NetrcSecretID
	// at NetrcPath.
	Netrc bool
	// CABundle, when set, is PEM certificates the download step trusts in
	// addition to the builder image's roots (internal CAs). It is not
	// secret; it is part of the graph.
	CABundle []byte
	// GoPrivate, GoNoProxy and GoNoSumDB are GOPRIVATE, GONOPROXY and
	// GONOSUMDB of the download step; empty leaves them unset.
	GoPrivate, GoNoProxy, GoNoSumDB string
	// SecretEnv are the names of secret environment variables of both
	// steps, each served as the session secret SecretEnvIDPrefix+name.
	SecretEnv []string
	// RemoteBuildCache makes `go build` use the builder's GOCACHEPROG
	// helper (GoCacheProgPath) with the build cache mount as its local
	// directory and the session's forwarded socket BuildCacheSSHID, at
	// BuildCacheSocketPath, as its remote store, if the builder has the
	// helper: only a Builder.Config with LabelGoCacheProg says so (see
	// BuilderHasGoCacheProg); with any other builder the graph is the one
	// without it, byte for byte. The socket is optional: without it the
	// build uses the local cache alone.
	RemoteBuildCache bool
	// SourceDateEpoch, when set (the commit time), is the timestamp of the
	// binary in the image, so that one commit always gives one layer. The
	// caller also hands it to the image exporter for the config's times.
	SourceDateEpoch *time.Time
	// NoCache makes BuildKit redo every step instead of reusing its
	// cache (a verification's rebuild from nothing).
	NoCache bool
}
