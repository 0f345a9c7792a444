package bootstrap

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/client/llb"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
	svcllb "github.com/buildsvc/buildsvc/llb"
)

// Where the helper is built in its step, and where the seed's step has
// the helper and makes the seed.
const (
	helperSrcDir = "/src"
	helperOutDir = "/out"
	seedHelper   = "/helper"
	seedOutDir   = "/seed"
)

// SeedPackages is what the seed holds compiled: the standard library.
const SeedPackages = "std"

// goCacheProgLayer is the builder's GOCACHEPROG helper (svcllb.
// GoCacheProgPath, the build service's remote build cache): a static
// build of cmd/buildsvc-gocacheprog made by the builder's own toolchain,
// on the builder's platform, in a step with no network, from the source
// this program carries (buildcache.HelperSource, which needs the standard
// library alone). With it comes its seed (svcllb.GoCacheSeedPath): the
// standard library compiled by the toolchain through the helper (see
// seedState). Both are staged as a tree and copied onto the image like
// git, so that the directories they add to keep the epoch as their time.
// The same toolchain and source always make the same files.
func goCacheProgLayer(s Spec, builder llb.State) llb.State {
	out := goEnv(s, builder)
	run := out.Network(llb.NetModeNone).Run(
		llb.Args([]string{GoRootPath + "/bin/go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w",
			"-o", path.Join(helperOutDir, path.Base(svcllb.GoCacheProgPath)), buildcache.HelperPackage}),
		llb.Dir(helperSrcDir),
		llb.AddMount(helperSrcDir, helperSource(s), llb.Readonly),
		llb.WithCustomName("[builder] go build "+path.Base(svcllb.GoCacheProgPath)),
	)
	bin := run.AddMount(helperOutDir, llb.Scratch())
	info := copyInfo(s, 0o755)
	info.CreateDestPath = true
	seed := copyInfo(s, 0)
	seed.CopyDirContentsOnly = true
	seed.CreateDestPath = true
	// The helper's scratch space is no part of a seed.
	seed.ExcludePatterns = []string{cacheprog.LocalSubdir + "/tmp"}
	return llb.Scratch().File(
		llb.Copy(bin, "/"+path.Base(svcllb.GoCacheProgPath), svcllb.GoCacheProgPath, info).
			Copy(seedState(s, builder, bin), "/", svcllb.GoCacheSeedPath, seed),
		llb.WithCustomName("[bootstrap] stage "+svcllb.GoCacheProgPath+" and its seed "+svcllb.GoCacheSeedPath),
	)
}

// seedState is the helper's directory after `go build -trimpath std` ran
// through it (the helper from bin) with nothing else in it: every package
// of the standard library compiled by the builder's toolchain for its
// platform, with CGO_ENABLED=0 and -trimpath, as the build service's
// compile step compiles them, so that a tenant's build finds them by
// Go's own action ids. Only this program's step writes it, from the
// toolchain alone: no tenant's code goes into it. SOURCE_DATE_EPOCH makes
// the helper stamp every entry with the epoch, so the same toolchain
// always gives the same seed.
func seedState(s Spec, builder, bin llb.State) llb.State {
	st := goEnv(s, builder).
		AddEnv("GOFLAGS", "").
		AddEnv("GOCACHEPROG", path.Join(seedHelper, path.Base(svcllb.GoCacheProgPath))).
		AddEnv(cacheprog.DirEnv, seedOutDir).
		AddEnv(cacheprog.SourceDateEpochEnv, strconv.FormatInt(s.Epoch.Unix(), 10))
	run := st.Network(llb.NetModeNone).Run(
		llb.Args([]string{GoRootPath + "/bin/go", "build", "-trimpath", SeedPackages}),
		llb.Dir("/"),
		llb.AddMount(seedHelper, bin, llb.Readonly),
		llb.WithCustomNamef("[builder] go build -trimpath %s into the helper's seed", SeedPackages),
	)
	return run.AddMount(seedOutDir, llb.Scratch())
}

// goEnv is the builder with the environment the bootstrap's own go
// commands run with: the toolchain of the image, offline, for its
// platform.
func goEnv(s Spec, builder llb.State) llb.State {
	out := builder.
		AddEnv("PATH", GoRootPath+"/bin:/usr/bin:/bin").
		AddEnv("GOROOT", GoRootPath).
		AddEnv("GOPATH", GoPath).
		AddEnv("HOME", HomePath).
		AddEnv("GOCACHE", "/tmp/go-build").
		AddEnv("GOTOOLCHAIN", "local").
		AddEnv("GOPROXY", "off").
		AddEnv("GOFLAGS", "-mod=mod").
		AddEnv("GOWORK", "off").
		AddEnv("CGO_ENABLED", "0").
		AddEnv("GOOS", s.Platform.OS).
		AddEnv("GOARCH", s.Platform.Architecture)
	if v := strings.TrimPrefix(s.Platform.Variant, "v"); s.Platform.Architecture == "arm" && v != "" {
		out = out.AddEnv("GOARM", v)
	}
	return out
}

// helperSource is the helper's module as files made in the graph, in
// path order, every time the epoch.
func helperSource(s Spec) llb.State {
	files, err := buildcache.HelperSource()
	if err != nil {
		// The source is embedded in this program: it cannot be missing.
		panic(fmt.Sprintf("bootstrap: %v", err))
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	ct := llb.WithCreatedTime(s.Epoch)
	fa := llb.Mkdir("/"+path.Dir(paths[0]), 0o755, llb.WithParents(true), ct)
	for _, p := range paths {
		fa = fa.Mkdir("/"+path.Dir(p), 0o755, llb.WithParents(true), ct).
			Mkfile("/"+p, 0o644, files[p], ct)
	}
	return llb.Scratch().File(fa, llb.WithCustomNamef("[bootstrap] %s source (%d files)", path.Base(svcllb.GoCacheProgPath), len(paths)))
}
