//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/metrics"
	"github.com/buildsvc/buildsvc/modproxy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// warmStack is what keeps disposable builders warm, started for one test:
// the service's module proxy (HTTPS with the stack's internal CA, upstream
// the machine's GOPROXY), a build-cache store, and a launcher of
// ephemeral buildkitds of the stack's binary and config.
type warmStack struct {
	proxy    *modproxy.Proxy
	proxyDir string // its cache
	proxyURL string
	store    *buildcache.DiskStore
	storeDir string
	launcher *buildkitd.Launcher
	builders string               // the launcher's state dir
	idle     int                  // idle builders kept ready
	reg      *prometheus.Registry // the proxy's metrics
}

func startWarmStack(t *testing.T) *warmStack {
	t.Helper()
	stackDir := os.Getenv("STACK_DIR")
	if stackDir == "" {
		t.Fatal("STACK_DIR is not set: run with `make test`")
	}
	goproxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	w := &warmStack{storeDir: t.TempDir(), proxyDir: t.TempDir()}
	var err error
	w.reg = prometheus.NewRegistry()
	if w.proxy, err = modproxy.New(w.proxyDir, modproxy.WithUpstream(strings.TrimSpace(string(goproxy))), modproxy.WithRegisterer(w.reg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.proxy.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: w.proxy.Handler(), ReadHeaderTimeout: time.Minute}
	pki := filepath.Join(stackDir, "pki")
	go srv.ServeTLS(lis, filepath.Join(pki, "internal-server.crt"), filepath.Join(pki, "internal-server.key"))
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	w.proxyURL = "https://localhost:" + port
	if w.store, err = buildcache.New(w.storeDir); err != nil {
		t.Fatal(err)
	}
	// A short state dir: the instances' sockets must fit a sun_path.
	w.builders, err = os.MkdirTemp("", "bk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(w.builders) })
	w.launcher, err = buildkitd.NewLauncher(buildkitd.LauncherConfig{
		StateDir:       w.builders,
		Binary:         filepath.Join(stackDir, "bin", "buildkitd"),
		ConfigFile:     filepath.Join(stackDir, "buildkitd.toml"),
		SystemCABundle: filepath.Join(stackDir, "buildkit-ca-bundle.crt"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		w.launcher.Close(ctx)
	})
	return w
}

// configure points a test server at the warm stack: every build on a
// fresh buildkitd, its modules through the proxy, its build cache backed
// by the store (wrapped by wrap, if given).
func (w *warmStack) configure(t *testing.T, wrap func(buildcache.Store) buildcache.Store) func(*server.Config) {
	ca, err := os.ReadFile(os.Getenv("INTERNAL_CA"))
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *server.Config) {
		cfg.Builders = server.EphemeralBuilders(w.launcher, w.idle)
		cfg.ModuleProxy, cfg.ModuleProxyURL = w.proxy, w.proxyURL
		cfg.BuildCache = w.store
		if wrap != nil {
			cfg.BuildCache = wrap(w.store)
		}
		cfg.Credentials = &credentials.Config{CABundle: ca}
		cfg.BuildUser = "65534:65534"
	}
}

// leftovers are the entries of the launcher's state dir other than its
// lock, once the builders of ended builds are thrown away (in the
// background, within a minute): what an ephemeral builder left behind.
func (w *warmStack) leftovers(t *testing.T) []string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ents, err := os.ReadDir(w.builders)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDisposableBuildersStayWarm: two builds of the sample, each on a
// brand-new buildkitd with empty state, the second of a new commit. The
// first fetches its module through the service's proxy and fills the
// build-cache store; the second downloads nothing from upstream (the proxy
// serves everything from its cache) and gets go build's results from the
// store. Each builder is gone, process and directory, once its build ends.
func TestDisposableBuildersStayWarm(t *testing.T) {
	t.Parallel() // on buildkitds of its own
	w := startWarmStack(t)
	ts := startTestServer(t, w.configure(t, nil))
	c := ts.Client
	repo := newRepo(t, sampleFiles(t))

	o1 := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "cold")})
	r1 := requireSuccess(t, o1)
	u1 := r1.GetCacheUsage()
	if u1.GetModuleMisses() == 0 || u1.GetModuleBytesFetched() == 0 {
		t.Errorf("first build: the proxy fetched nothing from upstream: %v", u1)
	}
	if u1.GetBuildCachePuts() == 0 || u1.GetBuildCacheBytesWritten() == 0 {
		t.Errorf("first build put nothing into the build-cache store: %v", u1)
	}
	// The standard library comes from the builder image's seed: the store
	// gets the sample's own packages and its link only (without the seed,
	// every package of the standard library it imports, some 200 entries
	// and 30 MB).
	if u1.GetBuildCachePuts() > 20 || u1.GetBuildCacheBytesWritten() > 5<<20 {
		t.Errorf("first build put %d entries, %d bytes into the store: the standard library did not come from the seed",
			u1.GetBuildCachePuts(), u1.GetBuildCacheBytesWritten())
	}
	if !strings.HasPrefix(r1.GetBuilder(), "ephemeral ") {
		t.Errorf("builder %q, want an ephemeral one", r1.GetBuilder())
	}
	if left := w.leftovers(t); len(left) != 0 {
		t.Errorf("after the first build the builders' dir holds %v", left)
	}

	files := sampleFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "hello from sampleapp", "hello again from sampleapp", 1)
	sha := repo.commit("main", "second", files)
	o2 := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: sha, ImageTag: tagFor(t, "warm")})
	r2 := requireSuccess(t, o2)
	u2 := r2.GetCacheUsage()
	t.Logf("first build: %v\nsecond build: %v", u1, u2)
	if u2.GetModuleMisses() != 0 || u2.GetModuleBytesFetched() != 0 || u2.GetModuleHits() == 0 {
		t.Errorf("second build on a new builder: want every module from the proxy's cache, got %v", u2)
	}
	if u2.GetBuildCacheHits() == 0 || u2.GetBuildCacheBytesRead() == 0 {
		t.Errorf("second build on a new builder got no build-cache hits from the store: %v", u2)
	}
	if ran, cached := stepRan(o2, "go mod download"); !ran || cached {
		t.Errorf("a new builder has no cache of its own: the download step ran %v, cached %v", ran, cached)
	}
	if r1.GetBuilder() == r2.GetBuilder() {
		t.Errorf("both builds ran on %q", r1.GetBuilder())
	}
	if out := runEntrypoint(t, pushedImage(t, r2.Image)); !strings.HasPrefix(out, "hello again from sampleapp") {
		t.Errorf("binary printed %q", out)
	}
	if left := w.leftovers(t); len(left) != 0 {
		t.Errorf("after both builds the builders' dir holds %v", left)
	}
	if out, _ := exec.Command("pgrep", "-f", w.builders).Output(); len(out) != 0 {
		t.Errorf("processes of the ephemeral builders still run: %s", out)
	}
	// The proxy's credentials are per build, in the session's netrc
	// secret only: in no event, record, image, metric, history file byte
	// or server log line.
	outputs := map[string][]byte{}
	for i, o := range []outcome{o1, o2} {
		id := o.events[0].GetBuildId()
		outputs[fmt.Sprintf("build %d's events", i+1)] = eventsText(o.events)
		info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
		if err != nil {
			t.Fatal(err)
		}
		outputs[fmt.Sprintf("build %d's record", i+1)], _ = protojson.Marshal(info)
	}
	outputs["image"] = imageBytes(t, pushedImage(t, r2.Image))
	hs := httptest.NewServer(metrics.Handler(w.reg))
	defer hs.Close()
	outputs["the proxy's metrics"] = scrapeText(t, hs.URL+"/metrics")
	if !bytes.Contains(outputs["the proxy's metrics"], []byte("buildsvc_modproxy_requests_total")) {
		t.Fatal("the proxy's metrics are not on the page, so looking for the password in them proves nothing")
	}
	ts.Stop()
	outputs["server log"] = []byte(ts.Log.String())
	hist, err := os.ReadFile(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs["history file"] = hist
	for i, o := range []outcome{o1, o2} {
		_, pass := w.proxy.Credentials("buildsvc-gomodcache", o.events[0].GetBuildId())
		for where, text := range outputs {
			if bytes.Contains(text, []byte(pass)) {
				t.Errorf("%s holds build %d's module proxy password", where, i+1)
			}
		}
	}
}

// failingStore is a build-cache store that starts failing every call
// once stopped, as a store that went away mid-build does.
type failingStore struct {
	buildcache.Store
	stopped atomic.Bool
}

var errStoreDown = errors.New("the store is down")

func (f *failingStore) GetAction(ctx context.Context, scope string, id []byte) (buildcache.Entry, error) {
	if f.stopped.Load() {
		return buildcache.Entry{}, errStoreDown
	}
	return f.Store.GetAction(ctx, scope, id)
}

func (f *failingStore) OpenOutput(ctx context.Context, scope string, id []byte) (io.ReadCloser, int64, error) {
	if f.stopped.Load() {
		return nil, 0, errStoreDown
	}
	return f.Store.OpenOutput(ctx, scope, id)
}

func (f *failingStore) Put(ctx context.Context, scope string, a, o []byte, size int64, body io.Reader) error {
	if f.stopped.Load() {
		return errStoreDown
	}
	return f.Store.Put(ctx, scope, a, o, size, body)
}

// TestBuildCacheStoreDownMidBuild: a store that fails while go build runs
// makes the build slower, never failed, and the build's log says so.
func TestBuildCacheStoreDownMidBuild(t *testing.T) {
	t.Parallel() // on buildkitds of its own
	w := startWarmStack(t)
	fs := &failingStore{}
	var calls atomic.Int64
	c := startServer(t, w.configure(t, func(s buildcache.Store) buildcache.Store {
		fs.Store = countingStore{s, &calls}
		return fs
	}))
	repo := newRepo(t, sampleFiles(t))
	// Stop the store once go build has asked it something.
	go func() {
		for calls.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		fs.stopped.Store(true)
	}()
	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "storedown")})
	r := requireSuccess(t, o)
	if !fs.stopped.Load() {
		t.Fatal("the store was never asked")
	}
	if !strings.Contains(o.logs(), "buildsvc-gocacheprog") {
		t.Errorf("the build's log does not say the store failed:\n%s", o.logs())
	}
	if out := runEntrypoint(t, pushedImage(t, r.Image)); !strings.HasPrefix(out, sampleOutput) {
		t.Errorf("binary printed %q", out)
	}
}

// countingStore counts the calls that reach a store.
type countingStore struct {
	buildcache.Store
	n *atomic.Int64
}

func (c countingStore) GetAction(ctx context.Context, scope string, id []byte) (buildcache.Entry, error) {
	c.n.Add(1)
	return c.Store.GetAction(ctx, scope, id)
}

// TestIdleBuilderIsWarm: with an idle builder kept ready, a build gets a
// brand-new buildkitd that has already pulled the builder and base images
// and copied the Go root (its build finds them cached), and another idle
// builder is started for the next build.
func TestIdleBuilderIsWarm(t *testing.T) {
	t.Parallel() // on buildkitds of its own
	w := startWarmStack(t)
	w.idle = 1
	ts := startTestServer(t, w.configure(t, nil))
	ready := func(n int) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for strings.Count(ts.Log.String(), `"msg":"idle builder ready"`) < n {
			if time.Now().After(deadline) {
				t.Fatalf("no idle builder ready after 3 minutes:\n%s", ts.Log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ready(1)
	repo := newRepo(t, sampleFiles(t))
	o := build(t, ts.Client, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "idle")})
	r := requireSuccess(t, o)
	if !strings.Contains(r.GetBuilder(), "idle-") {
		t.Errorf("the build ran on %q, not the idle builder", r.GetBuilder())
	}
	if ran, cached := stepRan(o, "Go root of the builder"); ran || !cached {
		t.Errorf("on the warmed builder the Go root copy ran %v, was cached %v", ran, cached)
	}
	if ran, cached := stepRan(o, "go build"); !ran || cached {
		t.Errorf("go build ran %v, was cached %v: the builder must be fresh", ran, cached)
	}
	ready(2)
}
