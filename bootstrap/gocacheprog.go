package bootstrap

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/moby/buildkit/client/llb"

	"github.com/buildsvc/buildsvc/buildcache"
	svcllb "github.com/buildsvc/buildsvc/llb"
)

// Where the helper is built in its step.
const (
	helperSrcDir = "/src"
	helperOutDir = "/out"
)

// goCacheProgLayer is the builder's GOCACHEPROG helper (svcllb.
// GoCacheProgPath, the build service's remote build cache): a static
// build of cmd/buildsvc-gocacheprog made by the builder's own toolchain,
// on the builder's platform, in a step with no network, from the source
// this program carries (buildcache.HelperSource, which needs the standard
// library alone). It is staged as a tree and copied onto the image like
// git, so that the directories it adds to keep the epoch as their time.
// The same toolchain and source always make the same binary.
func goCacheProgLayer(s Spec, builder llb.State) llb.State {
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
	return llb.Scratch().File(
		llb.Copy(bin, "/"+path.Base(svcllb.GoCacheProgPath), svcllb.GoCacheProgPath, info),
		llb.WithCustomName("[bootstrap] stage "+svcllb.GoCacheProgPath),
	)
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
