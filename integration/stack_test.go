//go:build integration

// Package integration tests the build service end to end against the real
// local stack that scripts/up.sh starts: buildkitd with runc, a registry
// that requires login, and a git daemon. Run it with `make test`, which
// starts the stack and exports its .stack/env.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
	"github.com/buildsvc/buildsvc/web"
)

// stack is the local stack's environment, from .stack/env.
type stack struct {
	BuildKitAddr, RegistryAddr, DockerConfig, GitBaseURL, GitBaseDir, BuilderImage, BaseImage string
}

func loadStack(t testing.TB) stack {
	t.Helper()
	s := stack{
		BuildKitAddr: os.Getenv("BUILDKIT_ADDR"),
		RegistryAddr: os.Getenv("REGISTRY_ADDR"),
		DockerConfig: os.Getenv("DOCKER_CONFIG"),
		GitBaseURL:   os.Getenv("GIT_BASE_URL"),
		GitBaseDir:   os.Getenv("GIT_BASE_DIR"),
		BuilderImage: os.Getenv("BUILDER_IMAGE"),
		BaseImage:    os.Getenv("BASE_IMAGE"),
	}
	for k, v := range map[string]string{"BUILDKIT_ADDR": s.BuildKitAddr, "REGISTRY_ADDR": s.RegistryAddr,
		"DOCKER_CONFIG": s.DockerConfig, "GIT_BASE_URL": s.GitBaseURL, "GIT_BASE_DIR": s.GitBaseDir,
		"BUILDER_IMAGE": s.BuilderImage, "BASE_IMAGE": s.BaseImage} {
		if v == "" {
			t.Fatalf("%s is not set: run the integration tests with `make test`, which starts the stack and sources .stack/env", k)
		}
	}
	return s
}

// gitPort is the port of the stack's git daemon, which a server's host
// policy must allow.
func (s stack) gitPort(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(s.GitBaseURL)
	if err != nil || u.Port() == "" {
		t.Fatalf("GIT_BASE_URL %q has no port", s.GitBaseURL)
	}
	return u.Port()
}

// startServer runs a build server in-process on 127.0.0.1 and returns a
// client for it. mutate may change the config (another docker config, ...).
func startServer(t testing.TB, mutate func(*server.Config)) buildv1.BuildClient {
	t.Helper()
	return startTestServer(t, mutate).Client
}

// startServerAddr is startServer that also returns the server's address.
func startServerAddr(t testing.TB, mutate func(*server.Config)) (buildv1.BuildClient, string) {
	t.Helper()
	ts := startTestServer(t, mutate)
	return ts.Client, ts.Addr
}

// testServer is an in-process build server and what it wrote.
type testServer struct {
	Client buildv1.BuildClient
	Addr   string
	// HistoryPath is the server's history file (bbolt).
	HistoryPath string
	// WebURL is the server's web page and HTTP/JSON API, when the test
	// asked for one (startWebTestServer).
	WebURL string
	// Log holds everything the server logged (JSON lines). It is printed
	// when the test fails.
	Log *syncBuffer
	// Stop stops the server and closes its history; the test's cleanup
	// calls it too.
	Stop func()
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startTestServer is startServer that also gives the server's address,
// history file and log. opts are more options of its gRPC server
// (interceptors).
func startTestServer(t testing.TB, mutate func(*server.Config), opts ...grpc.ServerOption) *testServer {
	t.Helper()
	return startTestServerWith(t, false, mutate, opts...)
}

// startWebTestServer is startTestServer with the web page and the
// HTTP/JSON API served too (package web), at WebURL.
func startWebTestServer(t testing.TB, mutate func(*server.Config)) *testServer {
	t.Helper()
	return startTestServerWith(t, true, mutate)
}

func startTestServerWith(t testing.TB, withWeb bool, mutate func(*server.Config), opts ...grpc.ServerOption) *testServer {
	t.Helper()
	st := loadStack(t)
	goproxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	ts := &testServer{HistoryPath: filepath.Join(t.TempDir(), "history.db"), Log: &syncBuffer{}}
	store, err := history.Open(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Store:            store,
		BuildKit:         buildkitd.Endpoint{Address: st.BuildKitAddr},
		BuilderImage:     st.BuilderImage,
		BaseImage:        st.BaseImage,
		DockerConfigDir:  st.DockerConfig,
		GoProxy:          strings.TrimSpace(string(goproxy)),
		AllowInsecureGit: false,
		Logger:           slog.New(slog.NewJSONHandler(ts.Log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// The stack's git daemon and the tests' own servers are on
		// 127.0.0.1, on ports of their own: the host policy allows loopback
		// and any port, server-wide (the resolver) and for every tenant
		// (the default policy, which the server passes to whatever
		// resolver a test brings). A test that replaces Tenants keeps the
		// resolver's; mutate can take both away (egress_test.go).
		Resolver: server.RemoteResolver{Allow: egress.Allowance{Loopback: true, AnyPort: true}},
		Tenants:  &policy.Policies{Defaults: policy.Tenant{AllowLoopback: true, AllowAnyPort: true}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx := context.Background()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(server.GRPCServerOptions(), opts...)...)
	buildv1.RegisterBuildServer(gs, srv)
	buildv1.RegisterAdminServiceServer(gs, srv)
	go gs.Serve(lis)
	var webSrv *httptest.Server
	if withWeb {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		h, err := web.New(web.Config{GRPC: gs, SessionKey: key, Logger: cfg.Logger})
		if err != nil {
			t.Fatal(err)
		}
		webSrv = httptest.NewServer(h)
		ts.WebURL = webSrv.URL
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	ts.Stop = func() {
		once.Do(func() {
			if webSrv != nil {
				webSrv.CloseClientConnections() // streams to a browser
				webSrv.Close()
			}
			conn.Close()
			gs.Stop()
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Close(cctx)
			store.Close()
		})
	}
	t.Cleanup(func() {
		ts.Stop()
		if t.Failed() {
			t.Logf("server log:\n%s", ts.Log.String())
		}
	})
	ts.Client, ts.Addr = buildv1.NewBuildClient(conn), lis.Addr().String()
	return ts
}

// outcome is everything a CreateImage stream delivered.
type outcome struct {
	events []*buildv1.BuildEvent
	err    error // the stream's final status
}

func (o outcome) result() *buildv1.BuildResult {
	for _, e := range o.events {
		if r := e.GetResult(); r != nil {
			return r
		}
	}
	return nil
}

func (o outcome) buildErr() *buildv1.BuildError {
	for _, e := range o.events {
		if r := e.GetError(); r != nil {
			return r
		}
	}
	return nil
}

func (o outcome) logs() string {
	var b strings.Builder
	for _, e := range o.events {
		if l := e.GetLog(); l != nil {
			b.Write(l.Data)
		}
	}
	return b.String()
}

func (o outcome) states() []buildv1.BuildState {
	var out []buildv1.BuildState
	for _, e := range o.events {
		if s := e.GetState(); s != nil {
			out = append(out, s.State)
		}
	}
	return out
}

// build runs CreateImage to the end.
func build(t testing.TB, c buildv1.BuildClient, req *buildv1.CreateImageRequest) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	stream, err := c.CreateImage(ctx, req)
	if err != nil {
		return outcome{err: err}
	}
	var o outcome
	for {
		e, err := stream.Recv()
		if err != nil {
			if err.Error() != "EOF" {
				o.err = err
			}
			break
		}
		o.events = append(o.events, e)
	}
	for i, e := range o.events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: the stream skipped or repeated events", i, e.Seq)
		}
	}
	return o
}

// gitRepo is a bare repository served by the stack's git daemon, with a
// work tree to make commits in.
type gitRepo struct {
	t          testing.TB
	work, bare string
	URL        string
	// date, if set, is the author and committer date of every commit.
	date string
}

var repoSeq atomic.Int64

func newRepo(t testing.TB, files map[string]string) *gitRepo {
	t.Helper()
	return newRepoAt(t, files, "")
}

// newRepoAt is newRepo whose commits are all dated date (git's date
// formats, e.g. RFC 3339); empty for now.
func newRepoAt(t testing.TB, files map[string]string, date string) *gitRepo {
	t.Helper()
	st := loadStack(t)
	return newRepoIn(t, files, date, st.GitBaseDir, st.GitBaseURL)
}

// newRepoIn makes a repository in dir, a directory a git server serves at
// baseURL.
func newRepoIn(t testing.TB, files map[string]string, date, dir, baseURL string) *gitRepo {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano(), repoSeq.Add(1))
	r := &gitRepo{t: t, work: t.TempDir(), bare: filepath.Join(dir, name+".git"), URL: baseURL + "/" + name + ".git", date: date}
	r.git(dir, "init", "-q", "--bare", "-b", "main", r.bare)
	t.Cleanup(func() { os.RemoveAll(r.bare) })
	r.git(r.work, "init", "-q", "-b", "main")
	r.git(r.work, "remote", "add", "origin", r.bare)
	r.commit("main", "initial", files)
	return r
}

func (r *gitRepo) git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com")
	if r.date != "" {
		cmd.Env = append(cmd.Env, "GIT_AUTHOR_DATE="+r.date, "GIT_COMMITTER_DATE="+r.date)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (a nil value deletes one), commits on branch and
// pushes; it returns the new commit's SHA.
func (r *gitRepo) commit(branch, msg string, files map[string]string) string {
	r.t.Helper()
	if cur := r.git(r.work, "symbolic-ref", "--short", "HEAD"); cur != branch {
		r.git(r.work, "checkout", "-q", "-B", branch)
	}
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git(r.work, "add", "-A")
	r.git(r.work, "commit", "-q", "--allow-empty", "-m", msg)
	r.git(r.work, "push", "-q", "-f", "origin", "HEAD:refs/heads/"+branch)
	return r.git(r.work, "rev-parse", "HEAD")
}

// readDir returns every file under dir (relative path → content).
func readDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
