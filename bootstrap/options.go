// Package bootstrap assembles the two images the build service needs, the
// Go builder and the runtime base, from files already on this machine, and
// pushes them to a registry, using buildkitd itself. It exists for machines
// that cannot pull public images (air-gapped sites, CI without internet).
//
// The builder image is made from scratch: the local Go toolchain at
// /usr/local/go, a static busybox installed as /bin/sh and friends, CA
// certificates, a minimal /etc/passwd and /etc/group, /tmp, /root and /go,
// the host's git with what it needs to fetch over HTTPS (see GitFiles; Go
// runs git for modules that come straight from a git host, GOPRIVATE
// ones), the build service's GOCACHEPROG helper (built in the image by its
// own toolchain from the source this program carries; see
// llb.GoCacheProgPath) with its seed, the standard library compiled
// through it (llb.GoCacheSeedPath), and an image config whose ENV makes `go build` work (GOROOT,
// GOPATH, HOME, GOCACHE, GOMODCACHE, GOTOOLCHAIN=local, CGO_ENABLED=0). The base
// image is made from scratch too: CA certificates, root and nonroot (65532)
// users, /tmp, and USER 65532:65532.
//
// The work is split the usual way: Options are checked and resolved once
// into a Spec (the only step that reads the host's files), BuilderState,
// BuilderConfig, BaseState and BaseConfig turn a Spec into LLB and image
// configs without any I/O, and Run sends both to buildkitd and pushes them.
// Timestamps are fixed (SOURCE_DATE_EPOCH is the toolchain's release time),
// so the same inputs give the same image digests.
package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Defaults of Options, for Debian with the Go toolchain in /usr/local/go
// and the busybox-static and ca-certificates packages.
const (
	DefaultGoRoot  = "/usr/local/go"
	DefaultBusybox = "/bin/busybox"
	DefaultCACerts = "/etc/ssl/certs/ca-certificates.crt"
)

// ErrInvalidOptions is wrapped by every error that comes from the Options
// themselves (a missing or malformed reference, a file that is not there)
// rather than from buildkitd or the registry.
var ErrInvalidOptions = errors.New("invalid bootstrap options")

// Options says what goes into the images and where they are pushed.
// The zero value of each optional field means its default.
type Options struct {
	// GoRoot is the Go toolchain copied to /usr/local/go in the builder.
	// Default DefaultGoRoot.
	GoRoot string
	// Busybox is a statically linked busybox binary. Default DefaultBusybox.
	Busybox string
	// CACerts is a PEM bundle of CA certificates. Default DefaultCACerts.
	CACerts string

	// BuilderRef and BaseRef are the references the two images are pushed
	// to, e.g. registry.example/buildsvc/builder:go1.26. Required. They must
	// not carry a digest.
	BuilderRef string
	BaseRef    string

	// DockerConfig is the directory of the docker config.json with the
	// registry's credentials. Empty means $DOCKER_CONFIG or ~/.docker.
	DockerConfig string

	// Platform is the platform of both images. It must match the Go
	// toolchain's and busybox's binaries, and buildkitd must be able to run
	// them (busybox --install runs in the image). Default: this machine's.
	Platform ocispecs.Platform

	// BasePlatforms are the base image's platforms: with more than one it
	// is pushed as an OCI image index, one manifest per platform sharing
	// one layer (it has no binaries: certificates, passwd and group,
	// directories), so that the build service can put a binary
	// cross-compiled for each on its variant. Platform is always one of
	// them, the first. Default DefaultBasePlatforms. The builder stays
	// Platform's alone: builds cross-compile, with no emulation.
	BasePlatforms []ocispecs.Platform

	// SourceDateEpoch fixes every timestamp in the images. Nil means the
	// release time in GoRoot's VERSION file, or the Unix epoch if it has
	// none.
	SourceDateEpoch *time.Time

	// NoCache makes buildkitd redo every step instead of reusing its
	// cache, as for a first build.
	NoCache bool

	// NoGit leaves git out of the builder. By default the host's git
	// (Debian's git package: GitPath, GitExecDir, GitTemplatesDir) goes
	// in, and Resolve fails with ErrNoGit when it is not installed. A
	// builder without git can only fetch modules through a module proxy.
	NoGit bool

	// hostRoot is the directory git is collected under: "/" but for tests.
	hostRoot string
}

// Spec is a resolved Options: every default filled in, every path absolute
// with its symlinks resolved and checked, and the toolchain's version read.
// The LLB and image configs are pure functions of a Spec.
type Spec struct {
	// GoRoot is the toolchain directory, Busybox and CACerts the two files.
	GoRoot  string
	Busybox string
	CACerts string
	// GoVersion is the toolchain's version, e.g. go1.26.8.
	GoVersion string
	// Epoch is the time every file and the image configs carry.
	Epoch time.Time
	// Platform is the images' platform, normalized.
	Platform ocispecs.Platform
	// BasePlatforms are the base image's, normalized, Platform first.
	BasePlatforms []ocispecs.Platform
	// BuilderRef and BaseRef are where the images are pushed.
	BuilderRef string
	BaseRef    string
	// NoCache is Options.NoCache.
	NoCache bool
	// Git is the host's git, copied into the builder; nil with
	// Options.NoGit.
	Git *GitFiles
}

// withDefaults returns o with every empty optional field set. It is the one
// place defaults are decided.
func (o Options) withDefaults() Options {
	if o.GoRoot == "" {
		o.GoRoot = DefaultGoRoot
	}
	if o.Busybox == "" {
		o.Busybox = DefaultBusybox
	}
	if o.CACerts == "" {
		o.CACerts = DefaultCACerts
	}
	if o.Platform.OS == "" && o.Platform.Architecture == "" {
		o.Platform = platforms.DefaultSpec()
	}
	o.Platform = platforms.Normalize(o.Platform)
	if o.BasePlatforms == nil {
		o.BasePlatforms = DefaultBasePlatforms
	}
	bp := []ocispecs.Platform{o.Platform}
	for _, p := range o.BasePlatforms {
		p = platforms.Normalize(p)
		if !slices.ContainsFunc(bp, func(q ocispecs.Platform) bool { return platforms.Format(q) == platforms.Format(p) }) {
			bp = append(bp, p)
		}
	}
	o.BasePlatforms = bp
	return o
}

// DefaultBasePlatforms are the base image's platforms unless told
// otherwise (besides the images' own).
var DefaultBasePlatforms = []ocispecs.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
	{OS: "linux", Architecture: "riscv64"},
}

// Validate checks the options without touching the file system.
func (o Options) Validate() error {
	o = o.withDefaults()
	if err := checkRef("builder image", o.BuilderRef); err != nil {
		return err
	}
	if err := checkRef("base image", o.BaseRef); err != nil {
		return err
	}
	b, _ := name.ParseReference(o.BuilderRef)
	s, _ := name.ParseReference(o.BaseRef)
	if b.Name() == s.Name() {
		return fmt.Errorf("%w: builder and base image are both pushed to %s", ErrInvalidOptions, b.Name())
	}
	for _, p := range append([]ocispecs.Platform{o.Platform}, o.BasePlatforms...) {
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("%w: platform %q needs both an OS and an architecture", ErrInvalidOptions, platforms.Format(p))
		}
	}
	return nil
}

func checkRef(what, ref string) error {
	if ref == "" {
		return fmt.Errorf("%w: %s reference is empty", ErrInvalidOptions, what)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidOptions, what, err)
	}
	if _, ok := r.(name.Digest); ok {
		return fmt.Errorf("%w: %s %q has a digest; give a tag to push to", ErrInvalidOptions, what, ref)
	}
	return nil
}

// Resolve validates the options, fills in the defaults, checks the host's
// files, reads the toolchain's version and collects git's files. An error
// wraps ErrInvalidOptions, and ErrNoGit too when git is not installed.
func (o Options) Resolve() (Spec, error) {
	if err := o.Validate(); err != nil {
		return Spec{}, err
	}
	o = o.withDefaults()
	s := Spec{Platform: o.Platform, BasePlatforms: o.BasePlatforms, BuilderRef: o.BuilderRef, BaseRef: o.BaseRef, NoCache: o.NoCache}
	var err error
	if s.GoRoot, err = resolvePath("Go root", o.GoRoot, true); err != nil {
		return Spec{}, err
	}
	if s.Busybox, err = resolvePath("busybox", o.Busybox, false); err != nil {
		return Spec{}, err
	}
	if s.CACerts, err = resolvePath("CA certificates", o.CACerts, false); err != nil {
		return Spec{}, err
	}
	if _, err := os.Stat(filepath.Join(s.GoRoot, "bin", "go")); err != nil {
		return Spec{}, fmt.Errorf("%w: Go root %s has no bin/go: %w", ErrInvalidOptions, o.GoRoot, err)
	}
	dt, err := os.ReadFile(filepath.Join(s.GoRoot, "VERSION"))
	if err != nil {
		return Spec{}, fmt.Errorf("%w: Go root %s: %w", ErrInvalidOptions, o.GoRoot, err)
	}
	version, released, err := parseGoVersion(dt)
	if err != nil {
		return Spec{}, fmt.Errorf("%w: %s: %w", ErrInvalidOptions, filepath.Join(o.GoRoot, "VERSION"), err)
	}
	s.GoVersion = version
	if !o.NoGit {
		root := o.hostRoot
		if root == "" {
			root = "/"
		}
		if s.Git, err = collectGit(root, o.Platform.Architecture); err != nil {
			return Spec{}, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
	}
	switch {
	case o.SourceDateEpoch != nil:
		s.Epoch = o.SourceDateEpoch.UTC()
	case !released.IsZero():
		s.Epoch = released
	default:
		s.Epoch = time.Unix(0, 0).UTC()
	}
	return s, nil
}

// resolvePath makes p absolute and resolves its symlinks, so that the local
// context shared with buildkitd is a real directory and the file in it a
// regular file (on merged-/usr systems /bin is itself a symlink).
func resolvePath(what, p string, dir bool) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %w", ErrInvalidOptions, what, p, err)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidOptions, what, err)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidOptions, what, err)
	}
	switch {
	case dir && !fi.IsDir():
		return "", fmt.Errorf("%w: %s %s is not a directory", ErrInvalidOptions, what, p)
	case !dir && !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: %s %s is not a regular file", ErrInvalidOptions, what, p)
	}
	return resolved, nil
}

// parseGoVersion reads a $GOROOT/VERSION file: the version on the first
// line ("go1.26.8"), then optional "key value" lines, of which "time" is
// the release time. A toolchain built from source may have no time line;
// released is then zero.
func parseGoVersion(dt []byte) (version string, released time.Time, err error) {
	lines := strings.Split(strings.ReplaceAll(string(dt), "\r\n", "\n"), "\n")
	version = strings.TrimSpace(lines[0])
	if !strings.HasPrefix(version, "go") || strings.ContainsAny(version, " \t") {
		return "", time.Time{}, fmt.Errorf("first line %q is not a Go version", version)
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(l), " ")
		if !ok || k != "time" {
			continue
		}
		released, err = time.Parse(time.RFC3339, strings.TrimSpace(v))
		if err != nil {
			return "", time.Time{}, fmt.Errorf("release time: %w", err)
		}
		released = released.UTC()
	}
	return version, released, nil
}
