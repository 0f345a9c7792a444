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

	out, bin, err := compile(s, builder)
	if err != nil {
		return nil, err
	}
	rootfs, err := runtimeImage(s, out, bin)
	if err != nil {
		return nil, err
	}
	co := []bkllb.ConstraintsOpt{bkllb.Platform(s.Platform)}
	if s.NoCache {
		co = append(co, bkllb.IgnoreCache)
	}
	def, err := rootfs.Marshal(ctx, co...)
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
// Its files have the commit's time (see SourceDefinition). An https
// repository's credentials are the session secret BuildKit's git
// source asks for by default (its GIT_AUTH_HEADER for the host); an ssh
// repository is fetched through the session's ssh agent GitSSHID with the
// Spec's known hosts.
func source(s Spec) bkllb.State {
	opts := []bkllb.GitOption{
		bkllb.GitRef(s.Commit),
		bkllb.GitMTimeCommit(),
		bkllb.WithCustomName(fmt.Sprintf("git %s@%s", s.Repo, shortSHA(s.Commit))),
	}
	if isSSH(s.Repo) {
		opts = append(opts, bkllb.KnownSSHHosts(s.KnownHosts), bkllb.MountSSHSock(GitSSHID))
	}
	return bkllb.Git(s.Repo, "", opts...)
}

// SourceDefinition returns the graph of the repository alone at the pinned
// commit, exactly as the build's graph has it, so that solving it first
// fetches what the build then uses. Its root directory's modification time
// is the commit's time (the source sets every file's to it), which is how
// the server learns the commit time: BuildKit's git metadata lookup of a
// pinned commit does not send the repository's credentials.
func SourceDefinition(ctx context.Context, s Spec) (*bkllb.Definition, error) {
	if err := validate(s); err != nil {
		return nil, err
	}
	def, err := source(s).Marshal(ctx)
	if err != nil {
		return nil, fmt.Errorf("marshal git source: %w", err)
	}
	return def, nil
}

// moduleFiles are the files the download step sees: those that say which
// modules a build needs, wherever they are in the repository (a replace
// directive may name a module in another directory).
var moduleFiles = []string{"**/go.mod", "**/go.sum", "**/go.work", "**/go.work.sum"}

// compile downloads the modules and runs `go build` in the builder image,
// and returns the state of the output directory, which holds only the
// binary. It is two steps:
//
//   - `go mod download`, with the network (to the module proxy), sees only
//     the repository's module files, so BuildKit reuses its result for
//     every commit that leaves them as they are; it alone writes the module
//     cache. No code of the repository runs in it. A failure (a vendored
//     repository with GOPROXY=off, a module the proxy lacks) does not stop
//     the build: the compile step says what is missing.
//   - `go build`, with no network and GOPROXY=off, the module cache mounted
//     read-only: no build can change a module another build reads.
//
// Both honour a toolchain line in go.mod (GOTOOLCHAIN=auto): the download
// step fetches that toolchain through the module proxy into the module
// cache, and the compile step runs it from there.
func compile(s Spec, builder *parsedConfig) (out bkllb.State, bin string, _ error) {
	st, err := builderState(s, builder)
	if err != nil {
		return bkllb.State{}, "", err
	}
	// Each step's own settings first; the request's environment comes last
	// and wins (a tenant allowed GOFLAGS sets it for both steps).
	withEnv := func(st bkllb.State) bkllb.State {
		for _, kv := range buildEnv(s) {
			st = st.AddEnv(kv[0], kv[1])
		}
		return st
	}
	modCache := bkllb.AsPersistentCacheDir(cmp.Or(s.ModCacheID, GoModCacheID), bkllb.CacheMountShared)
	limits := stepLimits(s)

	modules := bkllb.Scratch().File(
		bkllb.Copy(source(s), "/", "/", &bkllb.CopyInfo{
			IncludePatterns: moduleFiles, CopyDirContentsOnly: true, AllowEmptyWildcard: true, CreateDestPath: true,
		}),
		bkllb.WithCustomName("module files of "+shortSHA(s.Commit)),
	)
	dl := st.AddEnv("GOFLAGS", "-mod=mod")
	if s.GoProxy != "" {
		dl = dl.AddEnv("GOPROXY", s.GoProxy)
	}
	if s.ModulesGeneration != 0 {
		dl = dl.AddEnv(ModulesGenerationEnv, fmt.Sprint(s.ModulesGeneration))
	}
	for _, kv := range [][2]string{{"GOPRIVATE", s.GoPrivate}, {"GONOPROXY", s.GoNoProxy}, {"GONOSUMDB", s.GoNoSumDB}} {
		if kv[1] != "" {
			dl = dl.AddEnv(kv[0], kv[1])
		}
	}
	dlOpts := []bkllb.RunOption{
		bkllb.Args([]string{"go", "mod", "download"}),
		bkllb.Dir(path.Join(ModulesDir, s.Dir)),
		bkllb.AddMount(ModulesDir, modules),
		bkllb.AddMount(GoModCachePath, bkllb.Scratch(), modCache),
		bkllb.ValidExitCodes(0, 1),
		bkllb.WithCustomName("go mod download"),
	}
	if s.Netrc {
		dlOpts = append(dlOpts, bkllb.AddSecret(NetrcPath, bkllb.SecretID(NetrcSecretID), bkllb.SecretFileOpt(0, 0, 0o400)))
	}
	if len(s.CABundle) > 0 {
		// Go reads every file of SSL_CERT_DIR's directories and still its
		// default bundle file; git (libcurl) reads http.sslCAPath besides
		// its bundle. Both keep the builder image's roots.
		ca := bkllb.Scratch().File(bkllb.Mkfile("/"+CAFile, 0o444, s.CABundle), bkllb.WithCustomName("internal CA bundle"))
		dl = dl.AddEnv("SSL_CERT_DIR", CADir+":/etc/ssl/certs").
			AddEnv("GIT_CONFIG_COUNT", "1").
			AddEnv("GIT_CONFIG_KEY_0", "http.sslCAPath").
			AddEnv("GIT_CONFIG_VALUE_0", CADir)
		dlOpts = append(dlOpts, bkllb.AddMount(CADir, ca, bkllb.Readonly))
	}
	dlOpts = append(dlOpts, secretEnv(s)...)
	download := withEnv(dl).Run(append(dlOpts, limits...)...)

	cc := st.AddEnv("GOPROXY", "off")
	for _, kv := range targetEnv(s) {
		cc = cc.AddEnv(kv[0], kv[1])
	}
	if s.GoFlags != "" {
		cc = cc.AddEnv("GOFLAGS", s.GoFlags)
	}
	// As root, the build cache and the output are mounts of empty
	// directories; as another user, of directories made for that user.
	buildCache := []bkllb.MountOption{bkllb.AsPersistentCacheDir(cmp.Or(s.BuildCacheID, GoBuildCacheID), bkllb.CacheMountShared)}
	cacheBase, outBase, bin, cachePath := bkllb.Scratch(), bkllb.Scratch(), "/"+s.Binary, GoCachePath
	var outOpts []bkllb.MountOption
	uid, gid, _ := ParseUser(s.BuildUser) // checked by validate
	if s.BuildUser != "" {
		cc = cc.User(s.BuildUser)
		cacheBase = bkllb.Scratch().File(bkllb.Mkdir("/cache", 0o755, bkllb.WithUIDGID(uid, gid)),
			bkllb.WithCustomName("build cache for "+s.BuildUser))
		buildCache = append(buildCache, bkllb.SourcePath("/cache"))
		outBase = bkllb.Scratch().File(bkllb.Mkdir("/out", 0o755, bkllb.WithUIDGID(uid, gid)),
			bkllb.WithCustomName("output directory for "+s.BuildUser))
		outOpts = append(outOpts, bkllb.SourcePath("/out"))
		bin = "/out/" + s.Binary
		cachePath = UserGoCachePath
	}
	ccEnv := withEnv(cc)
	if s.BuildUser != "" {
		ccEnv = ccEnv.AddEnv("HOME", UserHome).AddEnv("GOCACHE", UserGoCachePath)
	}
	mounts := []string{SourceDir, GoModCachePath, cachePath, downloadedDir, OutputDir}
	var extra []bkllb.RunOption
	if s.RemoteBuildCache && builder.hasGoCacheProg() {
		var socket bkllb.RunOption
		ccEnv, socket = remoteBuildCache(ccEnv, builder, cachePath, uid, gid)
		extra = append(extra, socket)
	}
	run := ccEnv.Run(append(append([]bkllb.RunOption{
		bkllb.Args(buildArgs(s)),
		bkllb.Dir(path.Join(SourceDir, s.Dir)),
		bkllb.Network(pb.NetMode_NONE),
		bkllb.AddMount(SourceDir, source(s), bkllb.Readonly),
		bkllb.AddMount(GoModCachePath, bkllb.Scratch(), modCache, bkllb.Readonly),
		bkllb.AddMount(cachePath, cacheBase, buildCache...),
		bkllb.AddMount(downloadedDir, download.GetMount(ModulesDir), bkllb.Readonly),
		bkllb.WithCustomName("go build " + s.Package),
	}, goRootMount(st, builder, mounts)...), append(append(secretEnv(s), limits...), extra...)...)...)
	return run.AddMount(OutputDir, outBase, outOpts...), bin, nil
}

// builderState is the builder image on the build platform, with its
// config's environment.
func builderState(s Spec, builder *parsedConfig) (bkllb.State, error) {
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
	return st, nil
}

// goRootMount mounts the builder's Go root, read-only, at its own path in
// the compile step, from a copy of it on a snapshot of its own (made once
// per builder image, then cached like any step). The builder's root file
// system is a new overlay mount for every step, whose dentries and inodes
// start cold: `go build` looks up and reads hundreds of files of GOROOT/src
// to load and hash the standard library packages, which costs 30-50 ms more
// through a fresh overlay than on the host. A single-layer snapshot mounted
// read-only is a bind mount of a directory the host's caches keep warm
// across builds. See docs/performance.md.
//
// Only a builder whose config sets GOROOT to an absolute path gets the
// mount (the toolchain is known to be there); none when that path overlaps
// another mount of the step.
func goRootMount(builderImage bkllb.State, builder *parsedConfig, mounts []string) []bkllb.RunOption {
	if builder == nil {
		return nil
	}
	goroot, ok := builder.envValue("GOROOT")
	if !ok || !path.IsAbs(goroot) || path.Clean(goroot) != goroot || goroot == "/" {
		return nil
	}
	for _, m := range mounts {
		if within(goroot, m) || within(m, goroot) {
			return nil
		}
	}
	tree := bkllb.Scratch().File(
		bkllb.Copy(builderImage, goroot, "/", &bkllb.CopyInfo{CopyDirContentsOnly: true, FollowSymlinks: true}),
		bkllb.WithCustomName("Go root of the builder"),
	)
	return []bkllb.RunOption{bkllb.AddMount(goroot, tree, bkllb.Readonly)}
}

// within tells whether the clean absolute path p is dir or inside it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// secretEnv are the run options of Spec's secret environment.
func secretEnv(s Spec) []bkllb.RunOption {
	var opts []bkllb.RunOption
	for _, name := range s.SecretEnv {
		opts = append(opts, bkllb.AddSecret(name, bkllb.SecretID(SecretEnvIDPrefix+name), bkllb.SecretAsEnv(true)))
	}
	return opts
}

// stepLimits are the run options of Spec's resource limits.
func stepLimits(s Spec) []bkllb.RunOption {
	var opts []bkllb.RunOption
	for _, u := range s.Ulimits {
		opts = append(opts, bkllb.AddUlimit(bkllb.UlimitName(u.Name), u.Soft, u.Hard))
	}
	if s.CgroupParent != "" {
		opts = append(opts, bkllb.WithCgroupParent(s.CgroupParent))
	}
	return opts
}

// runtimeImage copies the binary, at bin in out, onto the base image, owned
// by root.
func runtimeImage(s Spec, out bkllb.State, bin string) (bkllb.State, error) {
	st := bkllb.Image(s.Base.Ref, bkllb.Platform(s.Platform))
	if s.Base.Config != nil {
		var err error
		st, err = st.WithImageConfig(s.Base.Config)
		if err != nil {
			return bkllb.State{}, fmt.Errorf("base image config: %w", err)
		}
		st = st.Platform(s.Platform)
	}
	copyOpts := []bkllb.CopyOption{&bkllb.CopyInfo{
		Mode:           &bkllb.ChmodOpt{Mode: binaryMode},
		CreateDestPath: true,
		CreatedTime:    s.SourceDateEpoch,
	}}
	if s.BuildUser != "" {
		copyOpts = append(copyOpts, bkllb.WithUIDGID(0, 0))
	}
	return st.File(
		bkllb.Copy(out, bin, binaryPath(s), copyOpts...),
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

// targetEnv is the compile step's target platform: GOOS, GOARCH and, for
// arm, GOARM. The download step has none, so that the builds of several
// platforms of one commit share it.
func targetEnv(s Spec) [][2]string {
	env := [][2]string{{"GOOS", s.Platform.OS}, {"GOARCH", s.Platform.Architecture}}
	if s.Platform.Architecture == "arm" {
		if v := strings.TrimPrefix(s.Platform.Variant, "v"); v != "" {
			env = append(env, [2]string{"GOARM", v})
		}
	}
	return env
}

// buildEnv is the environment both build steps get on top of the builder
// image's, as ordered key/value pairs. s.Env comes last, sorted, and wins.
// GOPROXY and GOFLAGS are each step's own (see compile), and so is the
// target platform (targetEnv).
func buildEnv(s Spec) [][2]string {
	var env [][2]string
	if _, ok := s.Env["CGO_ENABLED"]; !ok {
		env = append(env, [2]string{"CGO_ENABLED", "0"})
	}
	env = append(env,
		[2]string{"HOME", "/root"},
		[2]string{"GOCACHE", GoCachePath},
		[2]string{"GOMODCACHE", GoModCachePath},
	)
	if s.ModCacheID != "" || s.BuildCacheID != "" {
		env = append(env, [2]string{CacheScopeEnv, cmp.Or(s.ModCacheID, GoModCacheID) + "," + cmp.Or(s.BuildCacheID, GoBuildCacheID)})
	}
	// A toolchain line in go.mod is honoured (see compile).
	env = append(env, [2]string{"GOTOOLCHAIN", "auto"})
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
