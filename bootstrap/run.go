package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/identity"
	"github.com/moby/buildkit/session"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// Result is where the two images were pushed, each reference pinned by the
// digest of its manifest, e.g. registry.example/buildsvc/builder@sha256:….
type Result struct {
	BuilderRef string
	BaseRef    string
}

// product names this client to buildkitd's gateway.
const product = "buildsvc-bootstrap"

// Run builds both images with buildkitd and pushes them; the registry's
// credentials come from opts.DockerConfig through the session, so buildkitd
// never stores them. The two builds run at the same time.
//
// If status is not nil, Run sends the progress of both builds on it, ready
// for progressui.Display.UpdateFrom, and closes it before returning,
// whatever happens. The caller reads it until it is closed; once ctx has
// ended, progress nobody reads is dropped instead of blocking Run.
//
// Errors from the options themselves wrap ErrInvalidOptions.
func Run(ctx context.Context, c *client.Client, opts Options, status chan *client.SolveStatus) (Result, error) {
	var forwarders sync.WaitGroup
	if status != nil {
		defer func() {
			forwarders.Wait()
			close(status)
		}()
	}
	s, err := opts.Resolve()
	if err != nil {
		return Result{}, err
	}
	// progress gives one build its own status channel, forwarded to status.
	progress := func() chan *client.SolveStatus {
		if status == nil {
			return nil
		}
		ch := make(chan *client.SolveStatus)
		forwarders.Add(1)
		go func() {
			defer forwarders.Done()
			for st := range ch {
				select {
				case status <- st:
				case <-ctx.Done():
				}
			}
		}()
		return ch
	}

	dirs := localDirs(s)
	builderLocals := []string{LocalGoRoot, LocalBusybox, LocalCACerts}
	if s.Git != nil {
		dir, err := os.MkdirTemp("", "buildsvc-bootstrap-git-")
		if err != nil {
			return Result{}, fmt.Errorf("stage git: %w", err)
		}
		defer removeTree(dir)
		if err := stageTree(dir, s.Git.Files); err != nil {
			return Result{}, fmt.Errorf("stage git: %w", err)
		}
		dirs[LocalGit] = dir
		builderLocals = append(builderLocals, LocalGit)
	}

	r := runner{c: c, spec: s, dockerConfig: opts.DockerConfig, dirs: dirs}
	targets := []target{
		{what: "builder image", ref: s.BuilderRef, state: BuilderState(s), config: BuilderConfig(s),
			locals: builderLocals},
		{what: "base image", ref: s.BaseRef, state: BaseState(s), config: BaseConfig(s),
			platforms: s.BasePlatforms, locals: []string{LocalCACerts}},
	}
	pinned := make([]string, len(targets))
	eg, ectx := errgroup.WithContext(ctx)
	for i, t := range targets {
		ch := progress()
		eg.Go(func() error {
			ref, err := r.push(ectx, t, ch)
			if err != nil {
				return fmt.Errorf("%s %s: %w", t.what, t.ref, err)
			}
			pinned[i] = ref
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return Result{}, err
	}
	return Result{BuilderRef: pinned[0], BaseRef: pinned[1]}, nil
}

// target is one image to build and push.
type target struct {
	what   string
	ref    string
	state  llb.State
	config ocispecs.Image
	// platforms, when more than one, make it an index: the same file
	// system for each, config's platform set to each.
	platforms []ocispecs.Platform
	// locals names the local contexts the state reads.
	locals []string
}

// runner holds what every push shares.
type runner struct {
	c            *client.Client
	spec         Spec
	dockerConfig string
	// dirs maps each local context name to the host directory it shares.
	dirs map[string]string
}

// localDirs maps each local context name but LocalGit, which Run stages
// in a temporary directory, to the host directory it shares.
func localDirs(s Spec) map[string]string {
	return map[string]string{
		LocalGoRoot:  s.GoRoot,
		LocalBusybox: filepath.Dir(s.Busybox),
		LocalCACerts: filepath.Dir(s.CACerts),
	}
}

// localMounts opens the host directories of the named local contexts.
func localMounts(dirs map[string]string, names []string) (map[string]fsutil.FS, error) {
	mounts := make(map[string]fsutil.FS, len(names))
	for _, n := range names {
		if dirs[n] == "" {
			return nil, fmt.Errorf("no directory for local context %s", n)
		}
		fsys, err := fsutil.NewFS(dirs[n])
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", dirs[n], err)
		}
		mounts[n] = fsys
	}
	return mounts, nil
}

// marshal turns a state into the definition sent to buildkitd. localID
// tells this solve's local sources apart from other clients' sources of the
// same name (BuildKit draws a random one when it is not given); everything
// else in the definition is a function of the state and the spec.
func marshal(ctx context.Context, st llb.State, s Spec, localID string) (*llb.Definition, error) {
	co := []llb.ConstraintsOpt{llb.Platform(s.Platform), llb.LocalUniqueID(localID)}
	if s.NoCache {
		co = append(co, llb.IgnoreCache)
	}
	def, err := st.Marshal(ctx, co...)
	if err != nil {
		return nil, fmt.Errorf("marshal LLB: %w", err)
	}
	return def, nil
}

// exportAttrs are the image exporter's attributes for a push to ref.
// source-date-epoch clamps the config's and the history's times. The
// layers' file times are already the epoch (see BuilderState), so
// rewrite-timestamp, which would recompress every layer on every push, is
// off.
func exportAttrs(s Spec, ref string) map[string]string {
	return map[string]string{
		string(exptypes.OptKeyName):             ref,
		string(exptypes.OptKeyPush):             "true",
		string(exptypes.OptKeyOCITypes):         "true",
		string(exptypes.OptKeyLayerCompression): "gzip",
		string(exptypes.OptKeySourceDateEpoch):  strconv.FormatInt(s.Epoch.Unix(), 10),
	}
}

// push solves one image through the gateway, so that its config reaches
// the exporter as the result's containerimage.config, and pushes it. It
// returns the reference pinned by the pushed manifest's digest. It closes
// status.
func (r runner) push(ctx context.Context, t target, status chan *client.SolveStatus) (string, error) {
	closeStatus := func() {
		if status != nil {
			close(status)
		}
	}
	def, err := marshal(ctx, t.state, r.spec, identity.NewID())
	if err != nil {
		closeStatus()
		return "", err
	}
	mounts, err := localMounts(r.dirs, t.locals)
	if err != nil {
		closeStatus()
		return "", err
	}
	configs, ps, err := t.configs()
	if err != nil {
		closeStatus()
		return "", err
	}
	auth, err := buildkitd.DockerAuth(r.dockerConfig)
	if err != nil {
		closeStatus()
		return "", err
	}
	opt := client.SolveOpt{
		Exports:     []client.ExportEntry{{Type: client.ExporterImage, Attrs: exportAttrs(r.spec, t.ref)}},
		LocalMounts: mounts,
		Session:     []session.Attachable{auth},
	}
	build := func(ctx context.Context, gc gateway.Client) (*gateway.Result, error) {
		res, err := gc.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true})
		if err != nil {
			return nil, err
		}
		if ps == nil {
			res.AddMeta(exptypes.ExporterImageConfigKey, configs[0])
			return res, nil
		}
		ref, err := res.SingleRef()
		if err != nil {
			return nil, err
		}
		// One file system, a manifest (and a config) per platform.
		multi := gateway.NewResult()
		for i, p := range ps.Platforms {
			multi.AddRef(p.ID, ref)
			multi.AddMeta(exptypes.ExporterImageConfigKey+"/"+p.ID, configs[i])
		}
		dt, err := json.Marshal(ps)
		if err != nil {
			return nil, err
		}
		multi.AddMeta(exptypes.ExporterPlatformsKey, dt)
		return multi, nil
	}
	resp, err := r.c.Build(ctx, opt, product, build, status)
	if err != nil {
		return "", err
	}
	dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	if dgst == "" {
		return "", errors.New("buildkitd reported no image digest")
	}
	return pin(t.ref, dgst)
}

// configs are t's image configs in JSON, one per platform, and with more
// than one platform the exporter's platforms (nil for a single image).
func (t target) configs() ([][]byte, *exptypes.Platforms, error) {
	if len(t.platforms) <= 1 {
		dt, err := json.Marshal(t.config)
		if err != nil {
			return nil, nil, fmt.Errorf("image config: %w", err)
		}
		return [][]byte{dt}, nil, nil
	}
	ps := &exptypes.Platforms{}
	var configs [][]byte
	for _, p := range t.platforms {
		cfg := t.config
		cfg.Platform = p
		dt, err := json.Marshal(cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("image config for %s: %w", platforms.Format(p), err)
		}
		configs = append(configs, dt)
		ps.Platforms = append(ps.Platforms, exptypes.Platform{ID: platforms.FormatAll(p), Platform: p})
	}
	return configs, ps, nil
}

// removeTree removes a staged tree, making its directories writable first
// (a host directory may be read-only).
func removeTree(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

// pin replaces ref's tag with the digest.
func pin(ref, dgst string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	d, err := name.NewDigest(r.Context().Name() + "@" + dgst)
	if err != nil {
		return "", fmt.Errorf("pin %s to %s: %w", ref, dgst, err)
	}
	return d.String(), nil
}
