// Package version says what a binary of the build service was built from:
// its module version, the git commit (and whether the work tree had changes),
// the Go toolchain, and the BuildKit module it links. Everything comes from
// the build information the Go toolchain embeds in every binary
// (runtime/debug.ReadBuildInfo), so no -ldflags -X stamping is needed: a
// `go build` or `go install` from a git checkout records the commit itself.
package version

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"
)

// buildkitModule is the module path of BuildKit.
const buildkitModule = "github.com/moby/buildkit"

// Info is what a binary was built from. Empty fields are unknown.
type Info struct {
	// Version is the main module's version: a tag, a pseudo-version, or
	// "(devel)" when the toolchain could not tell.
	Version string
	// Revision is the git commit (vcs.revision), and Modified whether the
	// work tree had uncommitted changes (vcs.modified).
	Revision string
	Modified bool
	// GoVersion is the toolchain that built the binary, e.g. go1.26.8.
	GoVersion string
	// Platform is the binary's GOOS/GOARCH.
	Platform string
	// BuildKit is the version of the BuildKit module linked in.
	BuildKit string
}

// Get reads the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	}
	return FromBuildInfo(bi)
}

// FromBuildInfo reads the Info out of bi.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		info.Platform = goos + "/" + goarch
	}
	for _, d := range bi.Deps {
		if d.Path != buildkitModule {
			continue
		}
		info.BuildKit = d.Version
		if r := d.Replace; r != nil {
			by := r.Path
			if r.Version != "" {
				by += " " + r.Version
			}
			info.BuildKit = fmt.Sprintf("%s (replaced by %s)", d.Version, by)
		}
	}
	return info
}

// Write prints the Info as a block of "name value" lines, for --version:
//
//	buildsvc  v1.2.0
//	commit    60114eb... (modified)
//	go        go1.26.8 linux/amd64
//	buildkit  v0.34.2
//
// program names the binary on the first line. Unknown values show as
// "unknown".
func (i Info) Write(w io.Writer, program string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	commit := orUnknown(i.Revision)
	if i.Revision != "" && i.Modified {
		commit += " (modified)"
	}
	goVersion := orUnknown(i.GoVersion)
	if i.Platform != "" {
		goVersion += " " + i.Platform
	}
	fmt.Fprintf(tw, "%s\t%s\n", program, orUnknown(i.Version))
	fmt.Fprintf(tw, "commit\t%s\n", commit)
	fmt.Fprintf(tw, "go\t%s\n", goVersion)
	fmt.Fprintf(tw, "buildkit\t%s\n", orUnknown(i.BuildKit))
	return tw.Flush()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
