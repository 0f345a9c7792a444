package bootstrap

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/buildkit/client/llb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	svcllb "github.com/buildsvc/buildsvc/llb"
)

// Names of the local contexts Run shares with buildkitd. Each is a host
// directory; the LLB picks the one file it needs out of the busybox and CA
// certificates directories.
const (
	LocalGoRoot  = "bootstrap-goroot"
	LocalBusybox = "bootstrap-busybox"
	LocalCACerts = "bootstrap-cacerts"
	// LocalGit is a temporary directory holding git's files (Spec.Git),
	// each at its path in the image.
	LocalGit = "bootstrap-git"
)

// Paths inside the images.
const (
	GoRootPath  = "/usr/local/go"
	GoPath      = "/go"
	HomePath    = "/root"
	BusyboxPath = "/bin/busybox"
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
)

// NonrootUID is the user the base image runs as (the distroless convention).
const NonrootUID = 65532

// Labels set on the images.
const (
	LabelTitle       = "org.opencontainers.image.title"
	LabelDescription = "org.opencontainers.image.description"
	// LabelVersion is the Go toolchain's version, on the builder only.
	LabelVersion = "org.opencontainers.image.version"
	// LabelGoVersion is the Go toolchain's version, on the builder only.
	LabelGoVersion = "dev.buildsvc.go.version"
	// LabelGit is git's path, on a builder that has git.
	LabelGit = "dev.buildsvc.git"
)

// GoRootExcludes are the parts of the Go root a build never reads, left
// out of the builder: the API compatibility lists (api, only read by the
// release checks), the compiler's regression tests (test) and the HTML and
// release-note sources (doc). src and pkg, which `go build` needs, are
// copied whole, testdata included: a few std packages embed theirs.
var GoRootExcludes = []string{"api", "doc", "test"}

// tmpMode is /tmp's mode: rwx for all with the sticky bit. It is the raw
// Unix mode (S_ISVTX is 01000), which is what a copy's chmod takes; Mkdir
// keeps only the permission bits.
const tmpMode = os.FileMode(0o1777)

// BuilderState is the builder image's file system: five layers on scratch
// (four with Options.NoGit). The first holds /etc (users, groups, CA
// certificates), /tmp, /root, /go and busybox; the second is busybox's
// applet symlinks in /bin; the third is the Go toolchain; the fourth is
// git (see GitFiles), after the toolchain because it is smaller: a new
// toolchain redoes only the git copy on top of it, not the other way
// round; the fifth is the GOCACHEPROG helper and its seed (the standard
// library compiled), built in the image by its toolchain (see
// goCacheProgLayer), last because it changes with this program's version.
//
// The symlinks are made by running `/bin/busybox --install -s /bin` in exec
// form (there is no shell yet) without network, and then copied out of the
// container's file system with the epoch as their time: the run stamps
// them, and /bin, with the clock. With the first layer made the same way
// (see layer), every file in every layer carries the epoch as built, and
// the exporter need not rewrite timestamps, which would decompress and
// recompress every layer, the Go root's included, on every push.
func BuilderState(s Spec) llb.State {
	bin := copyInfo(s, 0o755)
	bin.CreateDestPath = true
	base := layer(s, "[builder] add /etc, /tmp, /root, /go and busybox",
		etc(s, builderPasswd, builderGroup).
			Copy(tmpDir(s), "/tmp", "/tmp", copyInfo(s, tmpMode)).
			Mkdir(HomePath, 0o700, llb.WithCreatedTime(s.Epoch)).
			Mkdir(GoPath, 0o755, llb.WithCreatedTime(s.Epoch)).
			Copy(localFile(LocalBusybox, s.Busybox), "/"+filepath.Base(s.Busybox), BusyboxPath, bin),
	)
	installed := base.Network(llb.NetModeNone).Run(
		llb.Args([]string{BusyboxPath, "--install", "-s", "/bin"}),
		llb.WithCustomName("[builder] busybox --install -s /bin"),
	).Root()
	links := copyInfo(s, 0)
	links.CopyDirContentsOnly = true
	links.ExcludePatterns = []string{filepath.Base(BusyboxPath)}
	shells := base.File(
		llb.Copy(installed, "/bin", "/bin", links),
		llb.WithCustomName("[builder] add busybox's applet links to /bin"),
	)
	goroot := llb.Local(LocalGoRoot,
		llb.ExcludePatterns(GoRootExcludes),
		llb.SharedKeyHint(LocalGoRoot),
		llb.WithCustomNamef("[builder] load Go root %s", s.GoRoot),
	)
	info := copyInfo(s, 0)
	info.CopyDirContentsOnly = true
	info.CreateDestPath = true
	withGo := shells.File(
		llb.Copy(goroot, "/", GoRootPath, info),
		llb.WithCustomNamef("[builder] add %s %s", s.GoVersion, GoRootPath),
	)
	top := withGo
	if s.Git != nil {
		top = withGo.File(
			llb.Copy(gitLocal(), "/", "/", treeCopyInfo(s)),
			llb.WithCustomName(gitLayerName(s.Git)),
		)
	}
	return top.File(
		llb.Copy(goCacheProgLayer(s, withGo), "/", "/", treeCopyInfo(s)),
		llb.WithCustomName("[builder] add the GOCACHEPROG helper "+svcllb.GoCacheProgPath+" and the standard library compiled, its seed"),
	)
}

// gitLocal is the local context of git's files, staged by Run.
func gitLocal() llb.State {
	return llb.Local(LocalGit,
		llb.SharedKeyHint(LocalGit),
		llb.WithCustomName("[bootstrap] load git and its libraries"),
	)
}

// treeCopyInfo copies a staged tree onto /: owned by root, the epoch as
// every time (the directories it adds to, /etc and /usr, included), modes
// as staged.
func treeCopyInfo(s Spec) *llb.CopyInfo {
	info := copyInfo(s, 0)
	info.CopyDirContentsOnly = true
	return info
}

// gitLayerName names the git layer after what it holds.
func gitLayerName(g *GitFiles) string {
	return fmt.Sprintf("[builder] add git: %s, %s/{%s}, %s and %d shared libraries",
		GitPath, GitExecDir, strings.Join(GitHelpers, ","), GitTemplatesDir, len(g.Libraries))
}

// BuilderConfig is the builder image's config. The environment is the one
// `go build` needs in a container with no login: HOME, GOCACHE and
// GOMODCACHE are explicit so that the build service's cache mounts (see
// package llb) are the directories Go uses. GOROOT is explicit too: a
// builder whose config names its Go root gets it mounted in the compile
// step from a single-layer copy, a bind whose caches stay warm across
// builds, instead of through the step's fresh overlay of the image (see
// docs/performance.md).
func BuilderConfig(s Spec) ocispecs.Image {
	env := []string{
		"PATH=" + GoRootPath + "/bin:" + GoPath + "/bin:/usr/local/bin:/usr/bin:/bin",
		"GOROOT=" + GoRootPath,
		"GOPATH=" + GoPath,
		"GOTOOLCHAIN=local",
		"HOME=" + HomePath,
		"GOCACHE=" + svcllb.GoCachePath,
		"GOMODCACHE=" + svcllb.GoModCachePath,
		"CGO_ENABLED=0",
	}
	labels := map[string]string{
		LabelTitle:       "buildsvc builder",
		LabelDescription: "Go toolchain " + s.GoVersion + " with busybox and CA certificates, assembled from local files by buildsvc bootstrap",
		LabelVersion:     s.GoVersion,
		LabelGoVersion:   s.GoVersion,
		// The build service gives `go build` its remote build cache only
		// in a builder that says it has the helper.
		svcllb.LabelGoCacheProg: svcllb.GoCacheProgPath,
		// and the standard library from the helper's seed.
		svcllb.LabelGoCacheSeed: svcllb.GoCacheSeedPath,
	}
	if s.Git != nil {
		labels[LabelDescription] = "Go toolchain " + s.GoVersion + " with busybox, git and CA certificates, assembled from local files by buildsvc bootstrap"
		labels[LabelGit] = GitPath
	}
	return image(s, ocispecs.ImageConfig{
		Env:        env,
		WorkingDir: GoPath,
		Cmd:        []string{"/bin/sh"},
		Labels:     labels,
	})
}

// BaseState is the runtime base image's file system: one layer on scratch
// with CA certificates, root and nonroot users with their homes, and /tmp.
// It has no shell.
func BaseState(s Spec) llb.State {
	return layer(s, "[base] add /etc, /tmp and home directories",
		etc(s, basePasswd, baseGroup).
			Copy(tmpDir(s), "/tmp", "/tmp", copyInfo(s, tmpMode)).
			Mkdir(HomePath, 0o700, llb.WithCreatedTime(s.Epoch)).
			Mkdir("/home", 0o755, llb.WithCreatedTime(s.Epoch)).
			Mkdir("/home/nonroot", 0o700, llb.WithUIDGID(NonrootUID, NonrootUID), llb.WithCreatedTime(s.Epoch)),
	)
}

// BaseConfig is the runtime base image's config: it runs as nonroot, and
// SSL_CERT_FILE points at the bundle for programs that do not look in the
// usual places. The entrypoint is left to the image built on it.
func BaseConfig(s Spec) ocispecs.Image {
	return image(s, ocispecs.ImageConfig{
		User:       userID(NonrootUID),
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + CACertsPath},
		WorkingDir: "/",
		Labels: map[string]string{
			LabelTitle:       "buildsvc base",
			LabelDescription: "Runtime base: CA certificates, root and nonroot (65532) users and /tmp, no shell; assembled by buildsvc bootstrap",
		},
	})
}

// layer is a first layer on scratch made of the files the actions make.
// The actions run in a staging file system, which is then copied whole,
// with the epoch as every file's time: a directory's time changes whenever
// an action adds to it, so the actions' own timestamps are not enough. The
// copy keeps owners and modes.
func layer(s Spec, name string, actions *llb.FileAction) llb.State {
	staged := llb.Scratch().File(actions, llb.WithCustomName(name+": stage"))
	epoch := s.Epoch
	return llb.Scratch().File(
		llb.Copy(staged, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &epoch}),
		llb.WithCustomName(name),
	)
}

func image(s Spec, cfg ocispecs.ImageConfig) ocispecs.Image {
	created := s.Epoch
	return ocispecs.Image{
		Created:  &created,
		Platform: s.Platform,
		Config:   cfg,
		RootFS:   ocispecs.RootFS{Type: "layers"},
	}
}

func userID(id int) string {
	return strconv.Itoa(id) + ":" + strconv.Itoa(id)
}

// etc is the action that makes /etc with passwd, group and the CA
// certificates, everything owned by root.
func etc(s Spec, passwd, group string) *llb.FileAction {
	ct := llb.WithCreatedTime(s.Epoch)
	return llb.Mkdir(filepath.Dir(CACertsPath), 0o755, llb.WithParents(true), ct).
		Mkfile("/etc/passwd", 0o644, []byte(passwd), ct).
		Mkfile("/etc/group", 0o644, []byte(group), ct).
		Copy(localFile(LocalCACerts, s.CACerts), "/"+filepath.Base(s.CACerts), CACertsPath, copyInfo(s, 0o644))
}

// tmpDir is a scratch state holding an empty /tmp, copied into the images
// so that the copy can set the sticky bit.
func tmpDir(s Spec) llb.State {
	return llb.Scratch().File(llb.Mkdir("/tmp", 0o777, llb.WithCreatedTime(s.Epoch)), llb.WithCustomName("[bootstrap] mkdir /tmp"))
}

// localFile is the local context holding path's directory, filtered down
// to path itself.
func localFile(name, path string) llb.State {
	return llb.Local(name,
		llb.IncludePatterns([]string{filepath.Base(path)}),
		llb.SharedKeyHint(name),
		llb.WithCustomNamef("[bootstrap] load %s", path),
	)
}

// copyInfo is the copy options every copy uses: owned by root, every
// timestamp the epoch, and the given mode (0 keeps the source's).
func copyInfo(s Spec, mode os.FileMode) *llb.CopyInfo {
	epoch := s.Epoch
	info := &llb.CopyInfo{
		ChownOpt:    &llb.ChownOpt{User: &llb.UserOpt{UID: 0}, Group: &llb.UserOpt{UID: 0}},
		CreatedTime: &epoch,
	}
	if mode != 0 {
		info.Mode = &llb.ChmodOpt{Mode: mode}
	}
	return info
}

const (
	builderPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	builderGroup = "root:x:0:\n" +
		"nobody:x:65534:\n"
	basePasswd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	baseGroup = "root:x:0:\n" +
		"nonroot:x:65532:\n"
)
