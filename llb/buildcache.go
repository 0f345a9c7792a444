package llb

import (
	"encoding/json"

	bkllb "github.com/moby/buildkit/client/llb"

	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
)

// The remote build cache (Spec.RemoteBuildCache): the compile step runs
// `go build` with the builder image's GOCACHEPROG helper, which keeps the
// build cache in the step's build cache mount and, through a unix socket
// the server's session forwards into the step, in the server's store (see
// package buildcache).
const (
	// GoCacheProgPath is where a builder image has the helper,
	// cmd/buildsvc-gocacheprog.
	GoCacheProgPath = "/usr/local/bin/buildsvc-gocacheprog"
	// LabelGoCacheProg is the builder image label that says it has the
	// helper; its value is GoCacheProgPath. See BuilderHasGoCacheProg.
	LabelGoCacheProg = "dev.buildsvc.gocacheprog"
	// BuildCacheSSHID is the id of the session's ssh forward that is the
	// store's socket (BuildKit's sshforward in raw mode: the session's
	// end is a unix socket the server listens on, not an ssh agent).
	BuildCacheSSHID = "buildsvc.gocache"
	// BuildCacheSocketPath is where the compile step has that socket.
	BuildCacheSocketPath = "/run/buildsvc/gocache.sock"
	// GoCacheProgDirEnv, GoCacheProgSocketEnv and GoCacheProgSeedEnv are
	// the helper's variables: its local directory (the build cache mount),
	// the store's socket and the seed.
	GoCacheProgDirEnv    = cacheprog.DirEnv
	GoCacheProgSocketEnv = cacheprog.SocketEnv
	GoCacheProgSeedEnv   = cacheprog.SeedEnv
	// GoCacheSeedPath is where a builder image has the helper's seed: the
	// standard library compiled by the image's own toolchain (`go build
	// -trimpath std` with CGO_ENABLED=0 for the image's platform), the
	// same for every tenant, so that a brand-new builder does not fetch
	// it from the store.
	GoCacheSeedPath = "/usr/local/share/buildsvc/gocache-std"
	// LabelGoCacheSeed is the builder image label that says it has the
	// seed; its value is GoCacheSeedPath.
	LabelGoCacheSeed = "dev.buildsvc.gocache-seed"
)

// BuilderHasGoCacheProg tells whether the builder image config dt says the
// image has the GOCACHEPROG helper (LabelGoCacheProg). Images made by
// `buildsvc bootstrap` do.
func BuilderHasGoCacheProg(dt []byte) bool {
	p, err := parseImageConfig(dt)
	return err == nil && p.hasGoCacheProg()
}

// hasGoCacheProg tells whether the (builder) config has LabelGoCacheProg;
// a nil config does not.
func (p *parsedConfig) hasGoCacheProg() bool {
	if p == nil {
		return false
	}
	v, ok := p.label(LabelGoCacheProg)
	return ok && v == GoCacheProgPath
}

// hasGoCacheSeed tells whether the (builder) config has LabelGoCacheSeed.
func (p *parsedConfig) hasGoCacheSeed() bool {
	if p == nil {
		return false
	}
	v, ok := p.label(LabelGoCacheSeed)
	return ok && v == GoCacheSeedPath
}

// label is the value of one of the config's labels.
func (p *parsedConfig) label(key string) (string, bool) {
	raw, ok := p.config["Labels"]
	if !ok || isNull(raw) {
		return "", false
	}
	var labels map[string]string
	if json.Unmarshal(raw, &labels) != nil {
		return "", false
	}
	v, ok := labels[key]
	return v, ok
}

// remoteBuildCache gives the compile step the helper's environment and the
// store's socket, owned by the step's user (uid, gid): the helper connects
// to it as that user. The mount is optional: a session without the
// forward gives a step without the socket, and the helper builds with the
// local cache alone. BuildKit also sets SSH_AUTH_SOCK to the socket's
// path (for an ssh mount it does when the step's environment lacks it);
// nothing in the compile step uses it. A builder with the seed
// (LabelGoCacheSeed) gives the helper its standard library.
func remoteBuildCache(st bkllb.State, builder *parsedConfig, cachePath string, uid, gid int) (bkllb.State, bkllb.RunOption) {
	st = st.AddEnv("GOCACHEPROG", GoCacheProgPath).
		AddEnv(GoCacheProgDirEnv, cachePath).
		AddEnv(GoCacheProgSocketEnv, BuildCacheSocketPath)
	if builder.hasGoCacheSeed() {
		st = st.AddEnv(GoCacheProgSeedEnv, GoCacheSeedPath)
	}
	return st, bkllb.AddSSHSocket(
		bkllb.SSHID(BuildCacheSSHID),
		bkllb.SSHSocketOpt(BuildCacheSocketPath, uid, gid, 0o600),
		bkllb.SSHOptional,
	)
}
