//go:build integration

package bootstrap

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/util/progress/progressui"

	"github.com/buildsvc/buildsvc/buildkitd"
	svcllb "github.com/buildsvc/buildsvc/llb"
)

// The integration tests run against the stack of scripts/up.sh:
//
//	. .stack/env && go test -tags integration -run Integration -v ./bootstrap/
//
// They need BUILDKIT_ADDR and REGISTRY_ADDR, and DOCKER_CONFIG when the
// registry wants a login, and push to $REGISTRY_ADDR/bootstrap-test/.

type stack struct {
	client       *client.Client
	registry     string
	dockerConfig string
}

func newStack(t *testing.T) stack {
	t.Helper()
	addr := os.Getenv("BUILDKIT_ADDR")
	if addr == "" {
		t.Skip("BUILDKIT_ADDR is not set; start the stack with scripts/up.sh and source .stack/env")
	}
	reg := os.Getenv("REGISTRY_ADDR")
	if reg == "" {
		t.Fatal("REGISTRY_ADDR is not set")
	}
	c, err := buildkitd.Dial(context.Background(), buildkitd.Endpoint{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return stack{client: c, registry: reg, dockerConfig: os.Getenv("DOCKER_CONFIG")}
}

// run runs Run with its progress shown as plain text, which the test
// prints if it fails.
func (s stack) run(t *testing.T, ctx context.Context, opts Options) (Result, time.Duration) {
	t.Helper()
	var log bytes.Buffer
	disp, err := progressui.NewDisplay(&log, progressui.PlainMode)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *client.SolveStatus)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = disp.UpdateFrom(context.Background(), ch)
	}()
	start := time.Now()
	res, err := Run(ctx, s.client, opts, ch)
	took := time.Since(start)
	wg.Wait() // Run closed ch
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s\n(buildkitd's log is in .stack/logs/buildkitd.log)", err, log.String())
	}
	return res, took
}

func (s stack) options(tag string) Options {
	return Options{
		BuilderRef:   s.registry + "/bootstrap-test/builder:" + tag,
		BaseRef:      s.registry + "/bootstrap-test/base:" + tag,
		DockerConfig: s.dockerConfig,
	}
}

func remoteImage(t *testing.T, ctx context.Context, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate %s: %v", ref, err)
	}
	return img
}

// files lists an image's flattened file system by path.
func files(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = h
	}
}

func TestIntegrationBootstrap(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	opts := st.options("integration")
	res, took := st.run(t, ctx, opts)
	t.Logf("pushed in %v:\n  %s\n  %s", took, res.BuilderRef, res.BaseRef)
	for _, ref := range []string{res.BuilderRef, res.BaseRef} {
		if !strings.Contains(ref, "@sha256:") {
			t.Errorf("%s is not pinned by digest", ref)
		}
	}
	spec, err := opts.Resolve()
	if err != nil {
		t.Fatal(err)
	}

	builder := remoteImage(t, ctx, res.BuilderRef)
	cfg, err := builder.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"GOROOT=/usr/local/go", "HOME=/root", "GOTOOLCHAIN=local", "CGO_ENABLED=0",
		"PATH=/usr/local/go/bin:/go/bin:/usr/local/bin:/usr/bin:/bin"} {
		if !slices.Contains(cfg.Config.Env, e) {
			t.Errorf("builder env %q lacks %s", cfg.Config.Env, e)
		}
	}
	if cfg.Config.Labels[LabelGoVersion] != spec.GoVersion {
		t.Errorf("builder labels = %v", cfg.Config.Labels)
	}
	if !cfg.Created.Time.Equal(spec.Epoch) {
		t.Errorf("builder created %v, want %v", cfg.Created, spec.Epoch)
	}
	fs := files(t, builder)
	for p, want := range map[string]byte{"/bin/busybox": tar.TypeReg, "/bin/sh": tar.TypeSymlink, "/usr/local/go/bin/go": tar.TypeReg,
		"/usr/local/go/src/fmt/print.go": tar.TypeReg, "/etc/passwd": tar.TypeReg, "/root": tar.TypeDir, "/go": tar.TypeDir} {
		if h := fs[p]; h == nil || h.Typeflag != want {
			t.Errorf("builder %s: %v", p, h)
		}
	}
	if h := fs["/usr/local/bin/buildsvc-gocacheprog"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o777 != 0o755 || h.Uid != 0 {
		t.Errorf("builder GOCACHEPROG helper: %+v", h)
	}
	for _, gone := range GoRootExcludes {
		if fs["/usr/local/go/"+gone] != nil {
			t.Errorf("builder has the excluded /usr/local/go/%s", gone)
		}
	}
	checkImageFiles(t, "builder", fs, spec)

	base := remoteImage(t, ctx, res.BaseRef)
	bcfg, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if bcfg.Config.User != "65532:65532" || !slices.Contains(bcfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("base config = %+v", bcfg.Config)
	}
	bfs := files(t, base)
	if h := bfs["/home/nonroot"]; h == nil || h.Uid != NonrootUID || h.Gid != NonrootUID {
		t.Errorf("base /home/nonroot = %+v", h)
	}
	if h := bfs["/bin/sh"]; h != nil {
		t.Error("base image has a shell")
	}
	checkImageFiles(t, "base", bfs, spec)

	t.Run("go in the builder", func(t *testing.T) {
		checkGoBuild(t, ctx, st, res.BuilderRef, spec.GoVersion)
	})
	t.Run("GOCACHEPROG helper in the builder", func(t *testing.T) {
		checkGoCacheProg(t, ctx, st, res.BuilderRef)
	})
}

// checkImageFiles checks what both images share: /tmp, the CA bundle, and
// every file's time being the epoch.
func checkImageFiles(t *testing.T, what string, fs map[string]*tar.Header, spec Spec) {
	t.Helper()
	if h := fs["/tmp"]; h == nil || h.Mode&0o7777 != 0o1777 {
		t.Errorf("%s /tmp = %+v, want mode 1777", what, h)
	}
	certs, err := os.Stat(spec.CACerts)
	if err != nil {
		t.Fatal(err)
	}
	if h := fs[CACertsPath]; h == nil || h.Size != certs.Size() {
		t.Errorf("%s %s = %+v", what, CACertsPath, h)
	}
	var late []string
	for p, h := range fs {
		if !h.ModTime.Equal(spec.Epoch) {
			late = append(late, p+" "+h.ModTime.UTC().String())
		}
	}
	if len(late) > 0 {
		slices.Sort(late)
		t.Errorf("%s: %d files not at the epoch %v, e.g. %q", what, len(late), spec.Epoch, late[:min(5, len(late))])
	}
}

// script is a shell script to run in the pushed builder, and what to read
// back from the /out mount it writes to.
type script struct {
	name string
	sh   string
	// outputs are the files of /out to read back.
	outputs []string
	// user runs the script as someone else than root; /out is then theirs.
	user string
	// env and mounts are added to the run.
	env    [][2]string
	mounts map[string]llb.State
}

// runScript runs a script in the pushed builder, through the gateway so
// that the image's config (its ENV) is resolved the way the build service
// resolves it, on the host network as build steps run here, and returns
// the outputs by name.
func runScript(t *testing.T, ctx context.Context, st stack, ref string, sc script) map[string]string {
	t.Helper()
	auth, err := buildkitd.DockerAuth(st.dockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	build := func(ctx context.Context, gc gateway.Client) (*gateway.Result, error) {
		img := llb.Image(ref, llb.WithMetaResolver(gc))
		for _, kv := range sc.env {
			img = img.AddEnv(kv[0], kv[1])
		}
		outDir := llb.Scratch()
		var outOpts []llb.MountOption
		if sc.user != "" {
			img = img.User(sc.user)
			uid, gid, ok := strings.Cut(sc.user, ":")
			if !ok {
				return nil, errors.New("user is not UID:GID")
			}
			u, _ := strconv.Atoi(uid)
			g, _ := strconv.Atoi(gid)
			outDir = llb.Scratch().File(llb.Mkdir("/out", 0o755, llb.WithUIDGID(u, g)))
			outOpts = append(outOpts, llb.SourcePath("/out"))
		}
		opts := []llb.RunOption{
			llb.Args([]string{"/bin/sh", "-c", sc.sh}),
			llb.IgnoreCache,
			llb.WithCustomName(sc.name),
		}
		for _, p := range keys(sc.mounts) {
			opts = append(opts, llb.AddMount(p, sc.mounts[p], llb.Readonly))
		}
		run := img.Run(opts...)
		def, err := run.AddMount("/out", outDir, outOpts...).Marshal(ctx)
		if err != nil {
			return nil, err
		}
		res, err := gc.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true})
		if err != nil {
			return nil, err
		}
		r, err := res.SingleRef()
		if err != nil {
			return nil, err
		}
		// With a user, the mount is /out of its own state.
		prefix := ""
		if sc.user != "" {
			prefix = "out/"
		}
		out = map[string]string{}
		for _, f := range sc.outputs {
			dt, err := r.ReadFile(ctx, gateway.ReadRequest{Filename: prefix + f})
			if err != nil {
				return nil, fmt.Errorf("read /out/%s: %w", f, err)
			}
			out[f] = string(dt)
		}
		return gateway.NewResult(), nil
	}
	var log bytes.Buffer
	disp, _ := progressui.NewDisplay(&log, progressui.PlainMode)
	ch := make(chan *client.SolveStatus)
	done := make(chan struct{})
	go func() { _, _ = disp.UpdateFrom(context.Background(), ch); close(done) }()
	_, err = st.client.Build(ctx, client.SolveOpt{Session: []session.Attachable{auth}}, "", build, ch)
	<-done
	if err != nil {
		t.Fatalf("%s: %v\n%s", sc.name, err, log.String())
	}
	return out
}

// checkGoBuild runs `go version` and builds a program in the pushed
// builder.
func checkGoBuild(t *testing.T, ctx context.Context, st stack, ref, version string) {
	out := runScript(t, ctx, st, ref, script{
		name: "go version and go build in the builder",
		sh: `go version > /out/version && env > /out/env && go env GOCACHE GOMODCACHE > /out/goenv &&
mkdir /tmp/hello && cd /tmp/hello && printf 'package main\n\nfunc main() { println("hello from the builder") }\n' > main.go &&
go mod init example.com/hello 2>/dev/null && go build -o /out/hello . && /out/hello 2> /out/hello.txt`,
		outputs: []string{"version", "env", "goenv", "hello.txt"},
	})
	t.Logf("go version: %s", strings.TrimSpace(out["version"]))
	if !strings.HasPrefix(out["version"], "go version "+version+" ") {
		t.Errorf("go version printed %q, want %s", out["version"], version)
	}
	if want := "/root/.cache/go-build\n/go/pkg/mod\n"; out["goenv"] != want {
		t.Errorf("go env GOCACHE GOMODCACHE = %q, want %q", out["goenv"], want)
	}
	if !strings.Contains(out["env"], "HOME=/root\n") {
		t.Errorf("env = %q", out["env"])
	}
	if strings.TrimSpace(out["hello.txt"]) != "hello from the builder" {
		t.Errorf("built program printed %q", out["hello.txt"])
	}
}

// checkGoCacheProg builds a program in the pushed builder with its
// GOCACHEPROG helper, twice, the store's socket absent: the first build
// fills the local directory and says once that it builds without the
// store, the second builds from the local directory. A third, as the
// build service's compile step builds (-trimpath, CGO_ENABLED=0), with
// the image's seed and an empty local directory, compiles only its own
// package: the standard library it imports (fmt, net/http) comes from the
// seed.
func checkGoCacheProg(t *testing.T, ctx context.Context, st stack, ref string) {
	out := runScript(t, ctx, st, ref, script{
		name: "go build with the GOCACHEPROG helper in the builder",
		sh: `mkdir /tmp/hello && cd /tmp/hello && printf 'package main\n\nfunc main() { println("hello through the helper") }\n' > main.go &&
go mod init example.com/hello 2>/dev/null && go build -o /out/hello . 2> /out/first.txt && rm /out/hello &&
go build -o /out/hello . 2> /out/second.txt && /out/hello 2> /out/hello.txt &&
find /tmp/cache/buildsvc-cacheprog-v1/o -type f | wc -l > /out/objects.txt &&
mkdir /tmp/web && cd /tmp/web && printf 'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n)\n\nfunc main() { fmt.Println("seeded", http.StatusOK) }\n' > main.go &&
go mod init example.com/web 2>/dev/null &&
CGO_ENABLED=0 BUILDSVC_GOCACHE_DIR=/tmp/cache2 BUILDSVC_GOCACHE_SEED=` + svcllb.GoCacheSeedPath + ` go build -trimpath -o /out/web . 2> /out/seeded.txt &&
/out/web > /out/web.txt &&
find /tmp/cache2/buildsvc-cacheprog-v1/o -type f | wc -l > /out/seeded-objects.txt &&
find ` + svcllb.GoCacheSeedPath + `/buildsvc-cacheprog-v1/a -type f | wc -l > /out/seed-actions.txt`,
		env: [][2]string{
			{"GOCACHEPROG", "/usr/local/bin/buildsvc-gocacheprog"},
			{"GOCACHE", "/tmp/cache"},
			{"BUILDSVC_GOCACHE_DIR", "/tmp/cache"},
			{"BUILDSVC_GOCACHE_SOCKET", "/run/buildsvc/gocache.sock"},
		},
		outputs: []string{"first.txt", "second.txt", "hello.txt", "objects.txt", "seeded.txt", "web.txt", "seeded-objects.txt", "seed-actions.txt"},
	})
	// The main package's compile and link; without the seed, the local
	// directory would hold every package net/http needs (over 100).
	if n, err := strconv.Atoi(strings.TrimSpace(out["seeded-objects.txt"])); err != nil || n > 6 {
		t.Errorf("with the seed, the build stored %q objects of its own (stderr %q), want its own package's only",
			out["seeded-objects.txt"], out["seeded.txt"])
	}
	if strings.TrimSpace(out["web.txt"]) != "seeded 200" {
		t.Errorf("the seeded build printed %q", out["web.txt"])
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(out["seed-actions.txt"])); n < 300 {
		t.Errorf("the seed has %q entries, want the standard library's", out["seed-actions.txt"])
	}
	if f := out["first.txt"]; !strings.Contains(f, "buildsvc-gocacheprog: build cache store unreachable") || strings.Count(f, "\n") != 1 {
		t.Errorf("first build's stderr = %q, want one warning line", f)
	}
	// The second build may not ask the store at all.
	if f := out["second.txt"]; strings.Count(f, "\n") > 1 {
		t.Errorf("second build's stderr = %q, want one warning line at most", f)
	}
	if strings.TrimSpace(out["hello.txt"]) != "hello through the helper" {
		t.Errorf("built program printed %q", out["hello.txt"])
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(out["objects.txt"])); n < 10 {
		t.Errorf("the helper's local directory has %q objects", out["objects.txt"])
	}
}

// TestIntegrationReproducible builds both images as scripts/images.sh
// does (from buildkitd's cache when an earlier bootstrap left it there: its
// steps ran in another process, at another time), then again with no
// cache, every step run anew now, and compares the digests: same files,
// same images.
func TestIntegrationReproducible(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var results []Result
	for _, noCache := range []bool{false, true} {
		tag := fmt.Sprintf("repro-nocache-%v", noCache)
		opts := st.options(tag)
		opts.NoCache = noCache
		res, took := st.run(t, ctx, opts)
		t.Logf("%s in %v:\n  %s\n  %s", tag, took, res.BuilderRef, res.BaseRef)
		results = append(results, Result{BuilderRef: digestOf(res.BuilderRef), BaseRef: digestOf(res.BaseRef)})
	}
	if results[0] != results[1] {
		t.Errorf("two builds of the same files differ:\n%+v\n%+v", results[0], results[1])
	}
}

// digestOf is the digest of a pinned reference (NAME@sha256:...).
func digestOf(ref string) string {
	_, d, _ := strings.Cut(ref, "@")
	return d
}

// gitHTTPSServer serves, over HTTPS on loopback with a certificate of its
// own, git's smart HTTP (git http-backend behind net/http/cgi) for one
// repository, lib: a Go module, git.example.test/lib.git, tagged v1.0.0.
// It returns the server's URL and its certificate in PEM.
func gitHTTPSServer(t *testing.T) (string, []byte) {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("no git on the host: %v", err)
	}
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	gitRun := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.test", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	gitRun("init", "-q", work)
	mustWrite(t, filepath.Join(work, "go.mod"), "module git.example.test/lib.git\n\ngo 1.21\n")
	mustWrite(t, filepath.Join(work, "lib.go"), "// Package lib is served by the test's git server.\npackage lib\n\nconst Hello = \"hello from git\"\n")
	gitRun("-C", work, "add", ".")
	gitRun("-C", work, "commit", "-q", "-m", "lib")
	gitRun("-C", work, "tag", "v1.0.0")
	srv := filepath.Join(dir, "srv")
	gitRun("clone", "-q", "--bare", work, filepath.Join(srv, "lib.git"))

	h := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + srv, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s := httptest.NewTLSServer(h)
	t.Cleanup(s.Close)
	return s.URL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// builderCADir is where the build service's download step mounts its CA
// bundle, and points git's http.sslCAPath at (see package llb).
const builderCADir = "/etc/buildsvc/ca"

// TestIntegrationBuilderGit checks the git in the pushed builder: it runs,
// `git init` finds its templates, and it fetches over HTTPS from a git
// host, the way Go's module fetcher does for a GOPRIVATE module: `go mod
// download` of a module served by a local HTTPS git server (reached on the
// host network), both as root, which the download step runs as, and as the
// unprivileged build user. The server's certificate comes the way the
// build service passes an internal CA (http.sslCAPath); without it, git
// refuses the server, so TLS is checked. The public roots work too: git
// reaches proxy.golang.org over TLS (its answer, an HTTP error, is beside
// the point).
func TestIntegrationBuilderGit(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	url, caPEM := gitHTTPSServer(t)

	opts := st.options("git")
	res, _ := st.run(t, ctx, opts)
	spec, err := opts.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if spec.Git == nil {
		t.Fatal("the spec has no git")
	}
	t.Logf("builder %s: git with %d files, %d libraries, %.1f MB", res.BuilderRef, len(spec.Git.Files), len(spec.Git.Libraries), float64(spec.Git.Size())/1e6)

	img := remoteImage(t, ctx, res.BuilderRef)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// The git layer is the fourth of five: the GOCACHEPROG helper is the
	// top one.
	if n := len(cfg.History); n != 5 || !strings.HasPrefix(cfg.History[3].CreatedBy, "[builder] add git: ") ||
		!strings.Contains(cfg.History[4].CreatedBy, "GOCACHEPROG helper") {
		t.Errorf("history %+v, want the git layer fourth of five, under the GOCACHEPROG helper's", cfg.History)
	}
	if len(layers) != 5 {
		t.Fatalf("builder has %d layers, want 5", len(layers))
	}
	gitLayer := layers[3]
	if size, err := gitLayer.Size(); err == nil {
		t.Logf("git layer: %.1f MB compressed", float64(size)/1e6)
	}
	if cfg.Config.Labels[LabelGit] != GitPath {
		t.Errorf("labels %v lack %s", cfg.Config.Labels, LabelGit)
	}
	// Every collected entry is in the image as collected, owned by root;
	// busybox's /bin is still a directory.
	tree := files(t, img)
	for _, f := range spec.Git.Files {
		h := tree[f.Path]
		if h == nil {
			t.Errorf("builder has no %s", f.Path)
			continue
		}
		var ok bool
		switch f.Kind {
		case KindDir:
			ok = h.Typeflag == tar.TypeDir && os.FileMode(h.Mode).Perm() == f.Mode
		case KindFile:
			ok = h.Typeflag == tar.TypeReg && os.FileMode(h.Mode).Perm() == f.Mode && h.Size == f.Size
		case KindSymlink:
			ok = h.Typeflag == tar.TypeSymlink && h.Linkname == f.Target
		}
		if !ok || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("builder %s = %c %o %d:%d -> %q, want %+v", f.Path, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, f)
		}
	}
	if h := tree["/bin"]; h == nil || h.Typeflag != tar.TypeDir || tree["/bin/sh"] == nil {
		t.Errorf("builder /bin = %+v, want busybox's directory", h)
	}
	checkImageFiles(t, "builder", tree, spec)

	ca := llb.Scratch().File(llb.Mkfile("/internal-ca.pem", 0o444, caPEM))
	env := [][2]string{
		{"GIT_URL", url},
		{"GIT_CONFIG_COUNT", "1"}, {"GIT_CONFIG_KEY_0", "http.sslCAPath"}, {"GIT_CONFIG_VALUE_0", builderCADir},
		{"GOPRIVATE", "git.example.test"}, {"GOFLAGS", "-mod=mod"},
	}
	// step NAME CMD... runs CMD with its output in /out/NAME and its exit
	// code in /out/NAME.rc.
	const steps = `step() { n=$1; shift; "$@" > /out/$n 2>&1; echo $? > /out/$n.rc; }
step version git --version
step init git init /tmp/x
step status git -C /tmp/x status
step goenv go env GOROOT GOMODCACHE GOPRIVATE
step lsremote git ls-remote "$GIT_URL/lib"
step noca env GIT_CONFIG_COUNT=0 git ls-remote "$GIT_URL/lib"
step public git ls-remote https://proxy.golang.org/
step config git config --global url."$GIT_URL/".insteadOf https://git.example.test/
step download go mod download -json git.example.test/lib.git@v1.0.0
`
	outputs := []string{}
	for _, n := range []string{"version", "init", "status", "goenv", "lsremote", "noca", "public", "config", "download"} {
		outputs = append(outputs, n, n+".rc")
	}
	check := func(t *testing.T, out map[string]string, user string) {
		rc := func(n string) string { return strings.TrimSpace(out[n+".rc"]) }
		for _, n := range []string{"version", "init", "status", "goenv", "lsremote", "config", "download"} {
			if rc(n) != "0" {
				t.Errorf("%s: %s exited %s:\n%s", user, n, rc(n), out[n])
			}
		}
		if !strings.HasPrefix(out["version"], "git version ") {
			t.Errorf("%s: git --version = %q", user, out["version"])
		}
		if strings.Contains(out["init"], "warning:") || !strings.Contains(out["init"], "Initialized empty Git repository in /tmp/x/.git/") {
			t.Errorf("%s: git init said %q", user, out["init"])
		}
		if !strings.Contains(out["status"], "No commits yet") {
			t.Errorf("%s: git status said %q", user, out["status"])
		}
		if !strings.Contains(out["lsremote"], "refs/tags/v1.0.0") {
			t.Errorf("%s: git ls-remote said %q", user, out["lsremote"])
		}
		if rc("noca") == "0" || !strings.Contains(out["noca"], "certificate") {
			t.Errorf("%s: without the CA, git ls-remote exited %s: %q; want a certificate error", user, rc("noca"), out["noca"])
		}
		if strings.Contains(out["public"], "certificate") || strings.Contains(out["public"], "SSL") {
			t.Errorf("%s: git does not trust the public roots: %q", user, out["public"])
		}
		if !strings.Contains(out["download"], `"Version": "v1.0.0"`) || strings.Contains(out["download"], `"Error"`) {
			t.Errorf("%s: go mod download printed %q", user, out["download"])
		}
		t.Logf("%s: %s; proxy.golang.org: %s", user, strings.TrimSpace(out["version"]), strings.TrimSpace(out["public"]))
	}

	t.Run("root", func(t *testing.T) {
		out := runScript(t, ctx, st, res.BuilderRef, script{
			name: "git in the builder, as root", sh: steps, outputs: outputs, env: env,
			mounts: map[string]llb.State{builderCADir: ca},
		})
		check(t, out, "root")
		if !strings.Contains(out["goenv"], "/usr/local/go\n/go/pkg/mod\ngit.example.test\n") {
			t.Errorf("go env = %q", out["goenv"])
		}
	})
	// The build user cannot enter /root: HOME is /tmp for it, as the
	// build service sets it.
	t.Run("build user", func(t *testing.T) {
		out := runScript(t, ctx, st, res.BuilderRef, script{
			name: "git in the builder, as 65534", sh: "export GOMODCACHE=/tmp/mod GOCACHE=/tmp/cache\n" + steps, outputs: outputs,
			env: append(env, [2]string{"HOME", "/tmp"}), user: "65534:65534",
			mounts: map[string]llb.State{builderCADir: ca},
		})
		check(t, out, "65534")
	})
}
