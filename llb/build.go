package llb

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
)

// BinDir is the directory of the runtime image the binary is copied into;
// the image's entrypoint is BinDir/<Binary>.
const BinDir = "/usr/local/bin"

// binaryMode is the file mode of the binary in the image.
const binaryMode = 0o755

// builderPathFallback is the PATH of `go build` when the builder image's
// config is unknown or has no PATH. It is the official golang images' PATH,
// which also covers a toolchain in /usr/local/go on a busybox image.
const builderPathFallback = "/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Result is a marshalled build graph plus the config of the image it makes.
type Result struct {
	// Definition is the LLB graph whose output is the runtime image's root
	// file system with the binary in it.
	Definition *bkllb.Definition
	// ImageConfig is the OCI image config JSON of the image. The image
	// exporter reads it from the solve result's metadata under
	// "containerimage.config" (a gateway build sets it with AddMeta).
	// Its rootfs and history are the base image's; the exporter rebuilds
	// rootfs and appends a history entry for the new layer.
	ImageConfig []byte
}

// Build converts s into an LLB definition and an image config. It does no
// I/O: the same Spec always gives the same bytes. A Spec that fails the
// minimal checks gives an error wrapping ErrInvalidSpec.
func Build(ctx context.Context, s Spec) (*Result, error) {
	if err := validate(s); err != nil {
		return nil, err
	}

	builder, err := parseImageConfig(s.Builder.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: builder image config: %w", ErrInvalidSpec, err)
	}
	base, err := parseImageConfig(s.Base.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: base image config: %w", ErrInvalidSpec, err)
	}

	out, err := compile(s, builder)
	if err != nil {
		return nil, err
	}
	rootfs, err := runtimeImage(s, out)
	if err != nil {
		return nil, err
	}
	def, err := rootfs.Marshal(ctx, bkllb.Platform(s.Platform))
	if err != nil {
		return nil, fmt.Errorf("marshal llb: %w", err)
	}

	cfg, err := imageConfig(s, base)
	if err != nil {
		return nil, err
	}
	return &Result{Definition: def, ImageConfig: cfg}, nil
}

// source is the repository at the pinned commit, without its .git directory.
func source(s Spec) bkllb.State {
	return bkllb.Git(s.Repo, "",
		bkllb.GitRef(s.Commit),
		bkllb.WithCustomName(fmt.Sprintf("git %s@%s", s.Repo, shortSHA(s.Commit))),
	)
}

// GitSource returns the source op of the repository at the pinned commit,
// exactly as the build's graph has it, for asking BuildKit about the commit
// (its time) through a gateway's ResolveSourceMetadata.
func GitSource(ctx context.Context, s Spec) (*pb.SourceOp, error) {
	if err := validate(s); err != nil {
		return nil, err
	}
	def, err := source(s).Marshal(ctx)
	if err != nil {
		return nil, fmt.Errorf("marshal git source: %w", err)
	}
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			return nil, fmt.Errorf("read git source: %w", err)
		}
		if src := op.GetSource(); src != nil {
			return src, nil
		}
	}
	return nil, fmt.Errorf("%w: no git source in the graph", ErrInvalidSpec)
}

// compile runs `go build` in the builder image and returns the state of the
// output directory, which holds only the binary.
func compile(s Spec, builder *parsedConfig) (bkllb.State, error) {
	st := bkllb.Image(s.Builder.Ref, bkllb.Platform(s.BuildPlatform))
	if builder != nil {
		var err error
		st, err = st.WithImageConfig(s.Builder.Config)
		if err != nil {
			return bkllb.State{}, fmt.Errorf("builder image config: %w", err)
		}
		// WithImageConfig takes the platform from the config; the builder
		// runs on the build platform whatever the config says.
		st = st.Platform(s.BuildPlatform)
	}
	if builder == nil || !builder.hasEnv("PATH") {
		st = st.AddEnv("PATH", builderPathFallback)
	}
	for _, kv := range buildEnv(s) {
		st = st.AddEnv(kv[0], kv[1])
	}

	run := st.Run(
		bkllb.Args(buildArgs(s)),
		bkllb.Dir(path.Join(SourceDir, s.Dir)),
		bkllb.AddMount(SourceDir, source(s), bkllb.Readonly),
		bkllb.AddMount(GoModCachePath, bkllb.Scratch(),
			bkllb.AsPersistentCacheDir(cmp.Or(s.ModCacheID, GoModCacheID), bkllb.CacheMountShared)),
		bkllb.AddMount(GoCachePath, bkllb.Scratch(),
			bkllb.AsPersistentCacheDir(cmp.Or(s.BuildCacheID, GoBuildCacheID), bkllb.CacheMountShared)),
		bkllb.WithCustomName("go build "+s.Package),
	)
	return run.AddMount(OutputDir, bkllb.Scratch()), nil
}

// runtimeImage copies the binary from out onto the base image.
func runtimeImage(s Spec, out bkllb.State) (bkllb.State, error) {
	st := bkllb.Image(s.Base.Ref, bkllb.Platform(s.Platform))
	if s.Base.Config != nil {
		var err error
		st, err = st.WithImageConfig(s.Base.Config)
		if err != nil {
			return bkllb.State{}, fmt.Errorf("base image config: %w", err)
		}
		st = st.Platform(s.Platform)
	}
	return st.File(
		bkllb.Copy(out, "/"+s.Binary, binaryPath(s), &bkllb.CopyInfo{
			Mode:           &bkllb.ChmodOpt{Mode: binaryMode},
			CreateDestPath: true,
			CreatedTime:    s.SourceDateEpoch,
		}),
		bkllb.WithCustomName("copy "+s.Binary),
	), nil
}

// buildArgs is the `go build` command line, in exec form: the builder image
// may have no shell.
func buildArgs(s Spec) []string {
	args := []string{"go", "build", "-trimpath", "-o", path.Join(OutputDir, s.Binary)}
	args = append(args, s.BuildFlags...)
	if s.LDFlags != "" {
		args = append(args, "-ldflags", s.LDFlags)
	}
	return append(args, s.Package)
}

// buildEnv is the environment `go build` gets on top of the builder image's,
// as ordered key/value pairs. s.Env comes last, sorted, and wins.
func buildEnv(s Spec) [][2]string {
	var env [][2]string
	if _, ok := s.Env["CGO_ENABLED"]; !ok {
		env = append(env, [2]string{"CGO_ENABLED", "0"})
	}
	env = append(env,
		[2]string{"GOOS", s.Platform.OS},
		[2]string{"GOARCH", s.Platform.Architecture},
	)
	if s.Platform.Architecture == "arm" {
		if v := strings.TrimPrefix(s.Platform.Variant, "v"); v != "" {
			env = append(env, [2]string{"GOARM", v})
		}
	}
	env = append(env,
		[2]string{"HOME", "/root"},
		[2]string{"GOCACHE", GoCachePath},
		[2]string{"GOMODCACHE", GoModCachePath},
	)
	if s.ModCacheID != "" || s.BuildCacheID != "" {
		env = append(env, [2]string{CacheScopeEnv, cmp.Or(s.ModCacheID, GoModCacheID) + "," + cmp.Or(s.BuildCacheID, GoBuildCacheID)})
	}
	if s.GoProxy != "" {
		env = append(env, [2]string{"GOPROXY", s.GoProxy})
	}
	if s.GoFlags != "" {
		env = append(env, [2]string{"GOFLAGS", s.GoFlags})
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, [2]string{k, s.Env[k]})
	}
	return env
}

// binaryPath is where the binary lands in the image.
func binaryPath(s Spec) string {
	return path.Join(BinDir, s.Binary)
}

func shortSHA(sha string) string {
	const n = 12
	if len(sha) > n {
		return sha[:n]
	}
	return sha
}
