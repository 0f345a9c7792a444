package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	commonexptypes "github.com/moby/buildkit/exporter/exptypes"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/imageconfig"
	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// solve runs the build graph on a buildkitd, which pushes the image, and
// streams BuildKit's progress into the build's log. A build whose builder
// is lost before the push runs once more, on another builder of a pool.
func (s *Server) solve(ctx context.Context, b *build, sha string) (*buildv1.BuildResult, error) {
	var lost []string
	var registryBO *backoff.ExponentialBackOff
	registryFailures := 0
	for {
		bk, builderName, release, err := s.acquireBuilder(ctx, b, lost)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		b.builder = builderName
		b.mu.Unlock()
		msg := "building " + shortCommit(sha)
		if s.cfg.Builders != nil {
			msg += " on " + builderName
		}
		b.setState(buildv1.BuildState_BUILD_STATE_BUILDING, msg)
		res, pushing, err := s.solveOn(ctx, b, sha, bk, builderName)
		// Gone during the solve, or unreachable once it was given to the
		// build: either way the build may run on another.
		unreachable := errors.Is(err, errBuildkitUnavailable)
		gone := err != nil && ctx.Err() == nil && (unreachable || builderGone(err))
		release(gone)
		if !gone {
			rt, trouble := registryTrouble{}, false
			if err != nil && ctx.Err() == nil {
				rt, trouble = registryTroubleOf(err)
			}
			if !trouble {
				return res, err
			}
			registryFailures++
			if registryBO == nil {
				registryBO = newRegistryBackOff()
			}
			wait, again := s.registryRetry(ctx, b, rt, registryBO, registryFailures)
			if !again {
				return nil, errRegistryUnavailable{trouble: rt, attempts: registryFailures, err: err}
			}
			s.cfg.Logger.Warn("registry trouble; running the build again", "build", b.id, "registry", rt.host, "answer", rt.why, "in", wait)
			b.log.append(registryRetryEvent(rt, wait, registryFailures+1))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, errRegistryUnavailable{trouble: rt, attempts: registryFailures, err: err}
			}
			continue
		}
		lost = append(lost, builderName)
		r, ok := s.cfg.Builders.(interface{ retriesLost() bool })
		if pushing || len(lost) > 1 || !ok || !r.retriesLost() {
			if unreachable {
				return nil, err
			}
			return nil, errBuilderLost{builder: builderName, pushing: pushing, retried: len(lost) > 1, err: err}
		}
		s.cfg.Logger.Warn("builder lost before the push; running the build again on another", "build", b.id, "builder", builderName, "err", err)
		b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
			Short: fmt.Sprintf("the builder (buildkitd %s) was lost before the push: running the build again on another builder", builderName),
		}}})
	}
}

// solveOn runs the build on bk, named builderName; pushing says whether
// the push had begun when it failed.
func (s *Server) solveOn(ctx context.Context, b *build, sha string, bk BuildKitClient, builderName string) (_ *buildv1.BuildResult, pushing bool, err error) {
	var pushBegan atomic.Bool
	defer func() { pushing = pushBegan.Load() }()
	platform, err := workerPlatform(ctx, bk)
	if err != nil {
		return nil, false, err
	}

	modCache, buildCache := s.buildCacheIDs(b.tenant, b.req)
	if b.verify != nil {
		modCache, buildCache = b.verify.cacheID+"-gomodcache", b.verify.cacheID+"-gocache"
	}
	caches := s.caches(b, cmp.Or(modCache, llb.GoModCacheID), cmp.Or(buildCache, llb.GoBuildCacheID))
	defer caches.close(s, b)
	if caches.netrc != nil {
		// First: netrc's first entry for a host wins.
		b.creds.Modules = append([]credentials.Module{*caches.netrc}, b.creds.Modules...)
	}

	// The session serves the build's credentials: registry auth, the git
	// and netrc secrets, the ssh agent, and the build-cache store's socket.
	// Nothing of them is in the graph.
	attach, err := b.creds.Attachables(b.registry, caches.sockets...)
	if err != nil {
		return nil, false, err
	}
	// The image exporter pushes to every name of a comma-separated list.
	attrs := map[string]string{"name": strings.Join(b.req.Tags, ","), "push": "true"}
	b.req.compressionAttrs(attrs)
	opt := client.SolveOpt{
		Exports: []client.ExportEntry{{Type: client.ExporterImage, Attrs: attrs}},
		Session: attach,
	}
	if b.verify != nil {
		opt.Exports = []client.ExportEntry{b.verify.export(b.req)}
	}
	if b.req.Provenance {
		// BuildKit's own SLSA provenance, as an attestation manifest in an
		// index beside the image's.
		opt.FrontendAttrs = map[string]string{"attest:provenance": "mode=max"}
	}
	genKey := modulesKey(b.tenant, modCache)
	generation := s.modulesGeneration(genKey)
	// One image per platform asked for (the worker's own if none), each
	// cross-compiled on the worker's platform.
	targets := b.req.Platforms
	if len(targets) == 0 {
		targets = []ocispecs.Platform{platform}
	}
	build := func(ctx context.Context, c gateway.Client) (*gateway.Result, error) {
		spec := s.spec(b.tenant, b.req, b.creds, sha, platform, llb.Image{Ref: b.req.builder(s.cfg.BuilderImage)}, llb.Image{Ref: b.req.BaseImage})
		if caches.goproxy != "" {
			spec.GoProxy = caches.goproxy
		}
		if caches.private {
			// GOPRIVATE modules through the proxy too; still not checked
			// against the checksum database (GONOSUMDB is GOPRIVATE's).
			spec.GoNoProxy = "none"
		}
		spec.RemoteBuildCache = caches.stats != nil
		spec.NoCache = b.verify != nil
		// The round trips to buildkitd before the solve are independent,
		// so they overlap: the builder, each platform's base, the commit.
		var epoch time.Time
		bases := make([]llb.Image, len(targets))
		eg, ectx := errgroup.WithContext(ctx)
		gitSpec := spec
		eg.Go(func() (err error) {
			spec.Builder, err = s.resolveImage(ectx, c, b, b.req.builder(s.cfg.BuilderImage), platform)
			if err != nil {
				return fmt.Errorf("builder image: %w", err)
			}
			return nil
		})
		for i, tp := range targets {
			eg.Go(func() (err error) {
				bases[i], err = s.resolveImage(ectx, c, b, b.req.BaseImage, tp)
				if err != nil {
					return fmt.Errorf("base image: %w", err)
				}
				return nil
			})
		}
		eg.Go(func() (err error) {
			epoch, err = commitEpoch(ectx, c, gitSpec)
			return err
		})
		if err := eg.Wait(); err != nil {
			return nil, err
		}
		spec.SourceDateEpoch = &epoch
		spec.ModulesGeneration = generation
		// Every platform's graph in one solve: BuildKit runs what they
		// share (the source, the module download) once.
		refs := make([]gateway.Reference, len(targets))
		configs := make([][]byte, len(targets))
		eg, ectx = errgroup.WithContext(ctx)
		for i, tp := range targets {
			ps := spec
			ps.Platform, ps.Base = tp, bases[i]
			def, err := llb.Build(ctx, ps)
			if err != nil {
				return nil, err
			}
			configs[i] = def.ImageConfig
			eg.Go(func() error {
				res, err := c.Solve(ectx, gateway.SolveRequest{Definition: def.Definition.ToPB(), Evaluate: true})
				if err != nil {
					return err
				}
				refs[i], err = res.SingleRef()
				return err
			})
		}
		if err := eg.Wait(); err != nil {
			return nil, err
		}
		res := gateway.NewResult()
		if b.req.SBOM {
			for i, tp := range targets {
				id := platforms.FormatAll(tp)
				ps := spec
				ps.Platform = tp
				att, err := sbomAttestation(ctx, c, refs[i], ps, platforms.Format(tp), b.req.Tag, epoch)
				if err != nil {
					return nil, err
				}
				res.AddAttestation(id, *att)
			}
		}
		if len(b.req.Platforms) == 0 && !b.req.SBOM {
			res.SetRef(refs[0])
			res.AddMeta(exptypes.ExporterImageConfigKey, configs[0])
		} else {
			// An index: a manifest per platform (and the attestations
			// beside them, keyed by the same ids).
			ps := exptypes.Platforms{}
			for i, tp := range targets {
				id := platforms.FormatAll(tp)
				res.AddRef(id, refs[i])
				res.AddMeta(exptypes.ExporterImageConfigKey+"/"+id, configs[i])
				ps.Platforms = append(ps.Platforms, exptypes.Platform{ID: id, Platform: tp})
			}
			dt, err := json.Marshal(ps)
			if err != nil {
				return nil, err
			}
			res.AddMeta(exptypes.ExporterPlatformsKey, dt)
		}
		// The image's times are the commit's: one commit, one digest.
		res.AddMeta(commonexptypes.ExporterEpochKey, []byte(strconv.FormatInt(epoch.Unix(), 10)))
		pushBegan.Store(true)
		b.setState(buildv1.BuildState_BUILD_STATE_PUSHING, pushingMessage(b.req.Tags))
		return res, nil
	}

	first, _ := b.log.stats()
	resp, err := s.runBuild(ctx, bk, b, opt, build)
	if err != nil && ctx.Err() == nil && compileMissedModules(b.log, first) {
		// BuildKit reused a download step whose modules have since been
		// pruned from the cache: run the download again, under a new
		// generation, in a new solve (in the same one, BuildKit keeps the
		// module cache as the failed step saw it), and compile again.
		b.log.append(modulesRefetched())
		generation = s.nextModulesGeneration(genKey, generation)
		s.cfg.Logger.Warn("module cache lacked modules; downloading again", "build", b.id, "generation", generation)
		resp, err = s.runBuild(ctx, bk, b, opt, build)
	}
	if err != nil {
		if ctx.Err() == nil {
			err = explainDownload(err, b.log, first)
		}
		return nil, false, err
	}
	dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	if dgst == "" {
		return nil, false, errors.New("buildkitd reported no image digest")
	}
	if b.verify != nil {
		return &buildv1.BuildResult{Digest: dgst, Commit: sha, Builder: builderName}, false, nil
	}
	tag, err := name.NewTag(b.req.Tag)
	if err != nil {
		return nil, false, err
	}
	ref := tag.Context().Digest(dgst)
	res := &buildv1.BuildResult{
		Image:      ref.Name(),
		Tag:        b.req.Tag,
		Tags:       b.req.Tags,
		Digest:     dgst,
		Commit:     sha,
		Builder:    builderName,
		CacheUsage: caches.usage(s, b),
	}
	// What was pushed, read back (under the build's host policy, as the
	// server's other registry reads): the image is in the registry
	// whatever happens here, so a failure only leaves the list empty.
	if res.Platforms, res.Index, err = s.pushed(ctx, b, ref); err != nil {
		s.cfg.Logger.Info("pushed image not read back", "build", b.id, "image", res.Image, "err", err)
		res.Platforms = nil
	}
	return res, false, nil
}

// workerPlatform is the platform of bk's (first) worker: what builds run
// on and, today, build for.
func workerPlatform(ctx context.Context, bk BuildKitClient) (ocispecs.Platform, error) {
	workers, err := bk.ListWorkers(ctx)
	if err != nil {
		return ocispecs.Platform{}, fmt.Errorf("%w: %w", errBuildkitUnavailable, err)
	}
	if len(workers) == 0 || len(workers[0].Platforms) == 0 {
		return ocispecs.Platform{}, errors.New("buildkitd has no workers")
	}
	return platforms.Normalize(workers[0].Platforms[0]), nil
}

// pushingMessage is the PUSHING state's message: "pushing TAG", or "pushing
// TAG and N more tags".
func pushingMessage(tags []string) string {
	switch n := len(tags) - 1; n {
	case 0:
		return "pushing " + tags[0]
	case 1:
		return "pushing " + tags[0] + " and 1 more tag"
	default:
		return fmt.Sprintf("pushing %s and %d more tags", tags[0], n)
	}
}

// runBuild runs one gateway build on buildkitd and streams its progress
// into b's log.
func (s *Server) runBuild(ctx context.Context, bk BuildKitClient, b *build, opt client.SolveOpt, build gateway.BuildFunc) (*client.SolveResponse, error) {
	statusCh := make(chan *client.SolveStatus)
	var resp *client.SolveResponse
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		// Drain every status, even after an error, so the solve never blocks.
		for st := range statusCh {
			for _, e := range progress.FromSolveStatus(st) {
				b.log.append(e)
			}
		}
		return nil
	})
	eg.Go(func() error {
		var err error
		resp, err = bk.Build(ectx, opt, "buildsvc", build, statusCh)
		return err
	})
	if err := eg.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return resp, nil
}

// spec turns an accepted request of tenant, with its credentials, into the
// LLB spec of one build.
func (s *Server) spec(tenant string, r *request, creds *credentials.Build, sha string, platform ocispecs.Platform, builder, base llb.Image) llb.Spec {
	modCache, buildCache := s.buildCacheIDs(tenant, r)
	goproxy, _ := credentials.ProxyCredentials(s.cfg.GoProxy) // its user info is in the netrc
	c := s.credentialsConfig()
	return llb.Spec{
		KnownHosts:    string(creds.KnownHosts),
		Netrc:         creds.Netrc() != nil,
		CABundle:      c.CABundle,
		GoPrivate:     joinList(c.GoPrivate, r.GoPrivate),
		GoNoProxy:     joinList(c.GoNoProxy, r.GoNoProxy),
		GoNoSumDB:     joinList(c.GoNoSumDB, r.GoNoSumDB),
		SecretEnv:     creds.SecretEnvNames(),
		ModCacheID:    modCache,
		BuildCacheID:  buildCache,
		Ulimits:       s.cfg.Ulimits,
		CgroupParent:  s.cfg.CgroupParent,
		BuildUser:     s.cfg.BuildUser,
		Repo:          r.Repo,
		Commit:        sha,
		Dir:           r.Dir,
		Package:       r.Package,
		Binary:        r.Binary,
		BuildFlags:    r.BuildFlags,
		LDFlags:       r.LDFlags,
		Env:           r.Env,
		GoProxy:       goproxy,
		GoFlags:       s.cfg.GoFlags,
		BuildPlatform: platform,
		Platform:      platform,
		Builder:       builder,
		Base:          base,
		Labels:        r.Labels,
	}
}

// commitEpoch fetches the repository at the commit through the gateway (so
// with the session's credentials; the build then reuses the fetch) and
// returns the commit's time, which the source gives its root directory.
func commitEpoch(ctx context.Context, c gateway.Client, spec llb.Spec) (time.Time, error) {
	def, err := llb.SourceDefinition(ctx, spec)
	if err != nil {
		return time.Time{}, err
	}
	res, err := c.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB()})
	if err != nil {
		return time.Time{}, fmt.Errorf("fetch commit %s: %w", spec.Commit, err)
	}
	ref, err := res.SingleRef()
	if err != nil {
		return time.Time{}, fmt.Errorf("fetch commit %s: %w", spec.Commit, err)
	}
	st, err := ref.StatFile(ctx, gateway.StatRequest{Path: "."})
	if err != nil {
		return time.Time{}, fmt.Errorf("read the time of commit %s: %w", spec.Commit, err)
	}
	if st.GetModTime() <= 0 {
		return time.Time{}, fmt.Errorf("read the time of commit %s: buildkitd gave none", spec.Commit)
	}
	return time.Unix(0, st.GetModTime()).UTC(), nil
}

// resolveImage looks up ref's config for platform through the gateway (so
// with the session's registry credentials) and pins ref to its digest.
func resolveImage(ctx context.Context, c gateway.Client, ref string, platform ocispecs.Platform) (llb.Image, error) {
	named, err := name.ParseReference(ref)
	if err != nil {
		return llb.Image{}, err
	}
	_, dgst, cfg, err := c.ResolveImageConfig(ctx, ref, sourceresolver.Opt{
		LogName:  "resolve image config for " + ref,
		ImageOpt: &sourceresolver.ResolveImageOpt{Platform: &platform, ResolveMode: "default"},
	})
	if err != nil {
		return llb.Image{}, fmt.Errorf("resolve %s: %w", ref, err)
	}
	return llb.Image{Ref: named.Context().Digest(dgst.String()).Name(), Config: cfg}, nil
}

// resolveImage is resolveImage through the server's memo of image configs:
// once per digest (a tag for imageconfig.DefaultTTL) and tenant. A build
// with registry credentials of its own shares no entry.
func (s *Server) resolveImage(ctx context.Context, c gateway.Client, b *build, ref string, platform ocispecs.Platform) (llb.Image, error) {
	scope := "tenant:" + b.tenant
	if b.req.creds != nil && len(b.req.creds.registries) > 0 {
		scope = "build:" + b.id
	}
	key := imageconfig.Key{Scope: scope, Ref: ref, Platform: platforms.Format(platform)}
	cfg, err := s.imageConfigs.Resolve(ctx, key, func(ctx context.Context) (imageconfig.Config, error) {
		img, err := resolveImage(ctx, c, ref, platform)
		return imageconfig.Config{Ref: img.Ref, JSON: img.Config}, err
	})
	return llb.Image{Ref: cfg.Ref, Config: cfg.JSON}, err
}

// credentialsConfig is the server's private-sources configuration, the
// zero one when it has none.
func (s *Server) credentialsConfig() credentials.Config {
	if s.cfg.Credentials == nil {
		return credentials.Config{}
	}
	return *s.cfg.Credentials
}

// goPrivate is the GOPRIVATE of a build of r: the server's and the
// request's.
func (s *Server) goPrivate(r *request) string {
	c := s.credentialsConfig()
	return joinList(joinList(c.GoPrivate, c.GoNoProxy), r.GoPrivate+","+r.GoNoProxy)
}

// buildCacheIDs are the cache mount ids of a build of tenant: the
// server's, except that a build that may fetch private modules (straight
// from their hosts, GOPRIVATE, or with the request's module or https
// credentials, or the server's rules of this tenant alone) has the
// tenant's own module cache, so that no other
// tenant's build finds them there without credentials.
func (s *Server) buildCacheIDs(tenant string, r *request) (mod, build string) {
	cfg := s.cfg
	ownCreds := r.creds != nil && (len(r.creds.modules) > 0 || r.creds.git.Password != "") ||
		s.cfg.Credentials.TenantModules(tenant)
	if strings.Trim(s.goPrivate(r), ",") != "" || ownCreds {
		cfg.PerTenantModuleCache = true
	}
	mod, build = cfg.cacheIDs(tenant)
	if cfg.CacheScope == CacheScopeRepositoryOwner {
		suffix := ownerSuffix(r.Repo)
		mod, build = cmp.Or(mod, llb.GoModCacheID)+suffix, cmp.Or(build, llb.GoBuildCacheID)+suffix
	}
	return mod, build
}

// joinList joins two comma-separated lists, either of which may be empty.
func joinList(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "," + b
}
