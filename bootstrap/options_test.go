package bootstrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

// fakeHost makes a Go root, a busybox and a CA bundle in a temporary
// directory, the busybox behind a symlinked directory as on merged-/usr
// systems, and returns Options pointing at them.
func fakeHost(t *testing.T, version string) Options {
	t.Helper()
	dir := t.TempDir()
	goroot := filepath.Join(dir, "go")
	mustWrite(t, filepath.Join(goroot, "bin", "go"), "")
	mustWrite(t, filepath.Join(goroot, "VERSION"), version)
	mustWrite(t, filepath.Join(dir, "usr", "bin", "busybox"), "")
	if err := os.Symlink("usr/bin", filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "certs", "ca.pem"), "")
	// git, as files that are not ELF (so with no libraries to find).
	mustWrite(t, filepath.Join(dir, "usr", "bin", "git"), "git")
	for _, h := range GitHelpers {
		mustWrite(t, filepath.Join(dir, "usr", "lib", "git-core", h), h)
	}
	mustWrite(t, filepath.Join(dir, "usr", "share", "git-core", "templates", "description"), "")
	return Options{
		GoRoot:     goroot,
		Busybox:    filepath.Join(dir, "bin", "busybox"),
		CACerts:    filepath.Join(dir, "certs", "ca.pem"),
		BuilderRef: "127.0.0.1:5000/buildsvc/builder:go1.26",
		BaseRef:    "127.0.0.1:5000/buildsvc/base",
		hostRoot:   dir,
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	o := fakeHost(t, "go1.26.8\ntime 2026-08-28T16:20:06Z\n")
	s, err := o.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.GoVersion != "go1.26.8" {
		t.Errorf("version = %q", s.GoVersion)
	}
	if !s.Epoch.Equal(testEpoch) {
		t.Errorf("epoch = %v, want the release time %v", s.Epoch, testEpoch)
	}
	want, err := filepath.EvalSymlinks(filepath.Join(filepath.Dir(o.Busybox), "..", "usr", "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Busybox != want {
		t.Errorf("busybox = %s, want its symlinks resolved", s.Busybox)
	}
	if s.Platform.OS != runtime.GOOS || s.Platform.Architecture != runtime.GOARCH {
		t.Errorf("default platform = %+v", s.Platform)
	}
}

func TestResolveGit(t *testing.T) {
	o := fakeHost(t, "go1.26.8\n")
	s, err := o.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Git == nil {
		t.Fatal("no git in the spec")
	}
	var files []string
	for _, f := range s.Git.Files {
		if f.Kind != KindDir {
			files = append(files, f.Path+" "+f.Target)
		}
	}
	// The second copy of git, in the exec path, becomes a symlink.
	want := []string{"/etc/gitconfig ", "/usr/bin/git ", "/usr/lib/git-core/git /usr/bin/git", "/usr/lib/git-core/git-remote-http ",
		"/usr/lib/git-core/git-remote-https ", "/usr/share/git-core/templates/description "}
	if !slices.Equal(files, want) {
		t.Errorf("git files = %q, want %q", files, want)
	}

	o.NoGit = true
	if s, err = o.Resolve(); err != nil || s.Git != nil {
		t.Errorf("NoGit: git = %v, err = %v", s.Git, err)
	}

	o = fakeHost(t, "go1.26.8\n")
	if err := os.Remove(filepath.Join(o.hostRoot, "usr", "bin", "git")); err != nil {
		t.Fatal(err)
	}
	_, err = o.Resolve()
	if !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, ErrNoGit) || !strings.Contains(err.Error(), "apt-get install git") {
		t.Errorf("without git: err = %v, want ErrInvalidOptions and ErrNoGit saying apt-get install git", err)
	}
	o.NoGit = true
	if _, err := o.Resolve(); err != nil {
		t.Errorf("without git, NoGit: %v", err)
	}
}

func TestResolveEpoch(t *testing.T) {
	o := fakeHost(t, "devel go1.27-abcdef\n")
	if _, err := o.Resolve(); err == nil || !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("a VERSION that is not a Go version: err = %v", err)
	}

	o = fakeHost(t, "go1.26.8\n")
	s, err := o.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Epoch.Unix() != 0 {
		t.Errorf("epoch without a release time = %v, want the Unix epoch", s.Epoch)
	}

	fixed := time.Date(2020, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	o = fakeHost(t, "go1.26.8\ntime 2026-08-28T16:20:06Z\n")
	o.SourceDateEpoch = &fixed
	if s, err = o.Resolve(); err != nil {
		t.Fatal(err)
	}
	if !s.Epoch.Equal(fixed) || s.Epoch.Location() != time.UTC {
		t.Errorf("epoch = %v, want %v in UTC", s.Epoch, fixed)
	}
}

func TestResolveRejects(t *testing.T) {
	for name, change := range map[string]func(*Options){
		"no builder ref":       func(o *Options) { o.BuilderRef = "" },
		"no base ref":          func(o *Options) { o.BaseRef = "" },
		"bad ref":              func(o *Options) { o.BaseRef = "UPPER/case:tag" },
		"digest ref":           func(o *Options) { o.BaseRef = "r.example/base@sha256:" + strings.Repeat("a", 64) },
		"same reference":       func(o *Options) { o.BaseRef = "127.0.0.1:5000/buildsvc/builder:go1.26" },
		"same default tag":     func(o *Options) { o.BuilderRef = "127.0.0.1:5000/buildsvc/base:latest" },
		"missing Go root":      func(o *Options) { o.GoRoot = "/does/not/exist" },
		"Go root is a file":    func(o *Options) { o.GoRoot = o.CACerts },
		"busybox is a dir":     func(o *Options) { o.Busybox = filepath.Dir(o.Busybox) },
		"missing CA bundle":    func(o *Options) { o.CACerts += ".missing" },
		"half a platform":      func(o *Options) { o.Platform.OS = "linux" },
		"Go root without a go": func(o *Options) { o.GoRoot = filepath.Dir(o.CACerts) },
	} {
		t.Run(name, func(t *testing.T) {
			o := fakeHost(t, "go1.26.8\n")
			change(&o)
			if _, err := o.Resolve(); !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("err = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.GoRoot != "/usr/local/go" || o.Busybox != "/bin/busybox" || o.CACerts != "/etc/ssl/certs/ca-certificates.crt" {
		t.Errorf("defaults = %+v", o)
	}
}

func TestParseGoVersion(t *testing.T) {
	v, tm, err := parseGoVersion([]byte("go1.26.8\r\ntime 2026-08-28T16:20:06Z\r\n"))
	if err != nil || v != "go1.26.8" || !tm.Equal(testEpoch) {
		t.Errorf("= %q %v %v", v, tm, err)
	}
	if _, _, err := parseGoVersion([]byte("go1.26.8\ntime yesterday\n")); err == nil {
		t.Error("accepted a bad time")
	}
	if _, _, err := parseGoVersion(nil); err == nil {
		t.Error("accepted an empty file")
	}
}

// Run closes the status channel even when it fails before any solve, and
// reports bad options as such, without touching the client.
func TestRunClosesStatusOnBadOptions(t *testing.T) {
	ch := make(chan *client.SolveStatus)
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	_, err := Run(context.Background(), nil, Options{}, ch)
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("err = %v, want ErrInvalidOptions", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("status channel not closed")
	}
}
