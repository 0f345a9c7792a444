//go:build integration

package bootstrap

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
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

// checkGoBuild runs `go version` and builds a program in the pushed
// builder, through the gateway so that the image's config (its ENV) is
// resolved the way the build service resolves it.
func checkGoBuild(t *testing.T, ctx context.Context, st stack, ref, version string) {
	auth, err := buildkitd.DockerAuth(st.dockerConfig)
	if err != nil {
		t.Fatal(err)
	}
	script := `go version > /out/version && env > /out/env && go env GOCACHE GOMODCACHE > /out/goenv &&
mkdir /tmp/hello && cd /tmp/hello && printf 'package main\n\nfunc main() { println("hello from the builder") }\n' > main.go &&
go mod init example.com/hello 2>/dev/null && go build -o /out/hello . && /out/hello 2> /out/hello.txt`
	var out map[string]string
	build := func(ctx context.Context, gc gateway.Client) (*gateway.Result, error) {
		run := llb.Image(ref, llb.WithMetaResolver(gc)).Run(
			llb.Args([]string{"/bin/sh", "-c", script}),
			llb.IgnoreCache,
			llb.WithCustomName("go version and go build in the builder"),
		)
		def, err := run.AddMount("/out", llb.Scratch()).Marshal(ctx)
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
		out = map[string]string{}
		for _, f := range []string{"version", "env", "goenv", "hello.txt"} {
			dt, err := r.ReadFile(ctx, gateway.ReadRequest{Filename: f})
			if err != nil {
				return nil, err
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
		t.Fatalf("go in the builder: %v\n%s", err, log.String())
	}
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

// TestIntegrationReproducible builds both images twice with no cache and
// compares the digests: same files, same images.
func TestIntegrationReproducible(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var results []Result
	for _, tag := range []string{"repro-1", "repro-2"} {
		opts := st.options(tag)
		opts.NoCache = true
		res, took := st.run(t, ctx, opts)
		t.Logf("%s, no cache, in %v:\n  %s\n  %s", tag, took, res.BuilderRef, res.BaseRef)
		results = append(results, res)
	}
	if results[0] != results[1] {
		t.Errorf("two builds of the same files differ:\n%+v\n%+v", results[0], results[1])
	}
}
