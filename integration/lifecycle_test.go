//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// hangingProxy is a GOPROXY that never answers: a build that needs a module
// from it stays inside `go build` until it is stopped. reached is closed
// when the first request arrives. It counts the requests whose client still
// holds the connection open, and notes when the last one went away.
type hangingProxy struct {
	URL     string
	reached chan struct{}
	once    sync.Once

	mu       sync.Mutex
	open     int
	lastGone time.Time
}

func newHangingProxy(t testing.TB) *hangingProxy {
	t.Helper()
	p := &hangingProxy{reached: make(chan struct{})}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.open++
		p.mu.Unlock()
		p.once.Do(func() { close(p.reached) })
		select {
		case <-r.Context().Done(): // the client closed the connection
			p.mu.Lock()
			p.open--
			if p.open == 0 {
				p.lastGone = time.Now()
			}
			p.mu.Unlock()
		case <-release:
		}
		http.Error(w, "gone", http.StatusGone)
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	p.URL = srv.URL
	return p
}

// hangingRepo is a module that needs example.com/hang, which only the
// hanging proxy serves.
func hangingRepo(t testing.TB) *gitRepo {
	return newRepo(t, map[string]string{
		"go.mod": "module example.com/waits\n\ngo 1.26\n\nrequire example.com/hang v1.0.0\n",
		"go.sum": "example.com/hang v1.0.0 h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" +
			"example.com/hang v1.0.0/go.mod h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
		"main.go": "package main\n\nimport _ \"example.com/hang\"\n\nfunc main() {}\n",
	})
}

// request asks for repo at main; the server must use the proxy (see
// configure).
func (p *hangingProxy) request(repo *gitRepo, tag string) *buildv1.CreateImageRequest {
	return &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tag}
}

// configure makes a server's builds use the proxy (a request may not set
// GOPROXY).
func (p *hangingProxy) configure(cfg *server.Config) { cfg.GoProxy = p.URL }

func (p *hangingProxy) waitReached(t testing.TB) {
	t.Helper()
	select {
	case <-p.reached:
	case <-time.After(5 * time.Minute):
		t.Fatal("the build never reached go build's module download")
	}
}

// waitClosed waits up to d for every connection to the proxy to be closed
// by its client and returns when the last one went away.
func (p *hangingProxy) waitClosed(t testing.TB, d time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		p.mu.Lock()
		open, gone := p.open, p.lastGone
		p.mu.Unlock()
		if open == 0 {
			return gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to the proxy are still open %v after the cancel: the step did not stop", open, d)
		}
	}
}

// watchAll reads WatchBuild from seq to the end.
func watchAll(t testing.TB, c buildv1.BuildClient, id string, from uint64) []*buildv1.BuildEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream, err := c.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id, FromSeq: from})
	if err != nil {
		t.Fatal(err)
	}
	var out []*buildv1.BuildEvent
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("watch %s: %v", id, err)
		}
		out = append(out, e)
	}
}

func lastState(evs []*buildv1.BuildEvent) buildv1.BuildState {
	var s buildv1.BuildState
	for _, e := range evs {
		if st := e.GetState(); st != nil {
			s = st.State
		}
	}
	return s
}

func sampleBuildSucceeds(t testing.TB, c buildv1.BuildClient) {
	t.Helper()
	repo := newRepo(t, sampleFiles(t))
	requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "after")}))
}

// A watcher that attaches mid-build from seq 0 gets every event exactly
// once, in order, ending with the result; so does a watcher after the end,
// reading from the history store.
func TestReattachReplaysEverything(t *testing.T) {
	c := startServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	files := sampleFiles(t)
	files["main.go"] += "\nvar _ = \"reattach\"\n"
	repo.commit("main", "new source, so go build runs", files)
	start, err := c.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "x")}))
	if err != nil {
		t.Fatal(err)
	}
	// Attach while it runs, part-way in.
	for {
		info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: start.BuildId})
		if err != nil {
			t.Fatal(err)
		}
		if info.LastSeq >= 3 || info.EndTime != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	live := watchAll(t, c, start.BuildId, 0)
	for i, e := range live {
		if e.Seq != uint64(i+1) || e.BuildId != start.BuildId {
			t.Fatalf("event %d: seq %d build %s", i, e.Seq, e.BuildId)
		}
	}
	if len(live) == 0 || live[len(live)-1].GetResult() == nil {
		t.Fatalf("the stream does not end with the result: %v", live[len(live)-1])
	}
	after := watchAll(t, c, start.BuildId, 0)
	if len(after) != len(live) {
		t.Fatalf("replay after the end has %d events, live had %d", len(after), len(live))
	}
	for i := range live {
		if !proto.Equal(live[i], after[i]) {
			t.Fatalf("event %d differs between live and replay:\n%v\n%v", i, live[i], after[i])
		}
	}
	if tail := watchAll(t, c, start.BuildId, uint64(len(live)-2)); len(tail) != 2 || tail[0].Seq != uint64(len(live)-1) {
		t.Errorf("replay from seq %d = %d events", len(live)-2, len(tail))
	}
}

// Cancelling a build inside a step (the module download, waiting on a
// module proxy that never answers) ends it CANCELLED within 2 s, its log
// intact; the step itself stops (its open connection to the proxy is
// closed within 2 s of the cancel), and buildkitd serves the next build.
func TestCancelDuringGoBuild(t *testing.T) {
	p := newHangingProxy(t)
	c := startServer(t, p.configure)
	start, err := c.StartBuild(t.Context(), startRequest(p.request(hangingRepo(t), tagFor(t, "x"))))
	if err != nil {
		t.Fatal(err)
	}
	p.waitReached(t)
	began := time.Now()
	resp, err := c.CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: start.BuildId})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	info := resp.GetBuild()
	if info.State != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("state after cancel = %v", info.State)
	}
	if took > 2*time.Second {
		t.Errorf("cancel took %v, want under 2s", took)
	}
	// The go command is still waiting on the proxy unless the step was
	// really stopped.
	if gone := p.waitClosed(t, 2*time.Second).Sub(began); gone > 2*time.Second {
		t.Errorf("the step's connection closed %v after the cancel, want under 2s", gone)
	} else {
		t.Logf("the step's connection closed %v after the cancel", gone.Round(time.Millisecond))
	}
	evs := watchAll(t, c, start.BuildId, 0)
	if lastState(evs) != buildv1.BuildState_BUILD_STATE_CANCELLED || evs[len(evs)-1].GetError() == nil {
		t.Errorf("log does not end CANCELLED with an error: %v", evs[len(evs)-1])
	}
	started, fetched := false, false
	for _, e := range evs {
		started = started || strings.HasPrefix(e.GetVertex().GetName(), "go mod download") && e.GetVertex().GetStarted() != nil
		fetched = fetched || strings.HasPrefix(e.GetVertex().GetName(), "git ") && e.GetVertex().GetCompleted() != nil
	}
	if !fetched {
		t.Errorf("the log lost the git fetch")
	}
	if !started {
		t.Errorf("the log lost the download step")
	}
	sampleBuildSucceeds(t, c)
}

// A build that outlives its timeout fails, naming the timeout, and
// buildkitd serves the next build.
func TestTimeout(t *testing.T) {
	p := newHangingProxy(t)
	c := startServer(t, p.configure)
	req := p.request(hangingRepo(t), tagFor(t, "x"))
	req.Timeout = durationpb.New(time.Second)
	o := build(t, c, req)
	berr := o.buildErr()
	if lastState(o.events) != buildv1.BuildState_BUILD_STATE_FAILED || berr == nil {
		t.Fatalf("want FAILED with an error, got %v / %v", o.states(), berr)
	}
	if codes.Code(berr.Code) != codes.DeadlineExceeded || !strings.Contains(berr.Message, "timed out after 1s") {
		t.Errorf("error = %v %q, want DeadlineExceeded naming the 1s timeout", codes.Code(berr.Code), berr.Message)
	}
	sampleBuildSucceeds(t, c)
}

// With one slot and a queue of one, a third build is refused at once;
// the queued one shows its position. Identical requests share a build.
func TestQueueFullAndDedup(t *testing.T) {
	p := newHangingProxy(t)
	c := startServer(t, func(cfg *server.Config) {
		p.configure(cfg)
		cfg.MaxConcurrent, cfg.QueueSize = 1, 1
	})
	repo := hangingRepo(t)
	first, err := c.StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "a"))))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "a"))))
	if err != nil {
		t.Fatal(err)
	}
	if again.BuildId != first.BuildId || !again.Joined {
		t.Errorf("identical request started %s (joined %v), want to join %s", again.BuildId, again.Joined, first.BuildId)
	}
	second, err := c.StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "b"))))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: second.BuildId})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != buildv1.BuildState_BUILD_STATE_QUEUED || info.QueuePosition != 0 {
		t.Errorf("second build: %v at position %d, want QUEUED at 0", info.State, info.QueuePosition)
	}
	_, err = c.StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "c"))))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third build: %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, id := range []string{second.BuildId, first.BuildId} {
		resp, err := c.CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: id})
		info := resp.GetBuild()
		if err != nil || info.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
			t.Errorf("cancel %s: %v %v", id, info.GetState(), err)
		}
	}
	first2, _ := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: first.BuildId})
	if first2.GetJoined() != 1 {
		t.Errorf("joined = %d, want 1", first2.GetJoined())
	}
	list, err := c.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{GitRepo: repo.URL})
	if err != nil || len(list.Builds) != 2 || list.Builds[0].BuildId != second.BuildId {
		t.Errorf("ListBuilds = %v, %v; want the two builds, newest first", list, err)
	}
}

// SIGKILL the server during a build and start it again: the history is
// intact and the build is INTERRUPTED, never left running.
func TestServerKilledMidBuild(t *testing.T) {
	st := loadStack(t)
	bin := filepath.Join(t.TempDir(), "buildsvc-server")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/server").CombinedOutput(); err != nil {
		t.Fatalf("build server: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	p := newHangingProxy(t)
	start := func() (*exec.Cmd, buildv1.BuildClient, string) {
		lis := freeAddr(t)
		cmd := exec.Command(bin, "--listen", lis, "--buildkit-addr", st.BuildKitAddr, "--data-dir", dataDir,
			"--docker-config", st.DockerConfig, "--builder-image", st.BuilderImage, "--base-image", st.BaseImage,
			"--allow-loopback-hosts", "--allowed-ports", st.gitPort(t),
			"--goproxy", p.URL)
		logf, _ := os.Create(filepath.Join(dataDir, fmt.Sprintf("server-%d.log", time.Now().UnixNano())))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		conn, err := grpc.NewClient(lis, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := buildv1.NewBuildClient(conn)
		for i := 0; ; i++ {
			actx, cancel := context.WithTimeout(t.Context(), time.Second)
			_, err := c.ListBuilds(actx, &buildv1.ListBuildsRequest{}, grpc.WaitForReady(true))
			cancel()
			if err == nil {
				break
			}
			if i > 100 {
				t.Fatalf("server did not come up: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return cmd, c, lis
	}
	cmd, c, _ := start()
	b, err := c.StartBuild(t.Context(), startRequest(p.request(hangingRepo(t), tagFor(t, "x"))))
	if err != nil {
		t.Fatal(err)
	}
	p.waitReached(t)
	time.Sleep(300 * time.Millisecond) // let the log reach the store
	before, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: b.BuildId})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	_, c, _ = start()
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: b.BuildId})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != buildv1.BuildState_BUILD_STATE_INTERRUPTED || info.Error.GetMessage() == "" || info.EndTime == nil {
		t.Fatalf("after restart: %v", info)
	}
	evs := watchAll(t, c, b.BuildId, 0)
	if uint64(len(evs)) < before.LastSeq || evs[len(evs)-1].GetError() == nil {
		t.Errorf("history has %d events (had %d before the kill), last %v", len(evs), before.LastSeq, evs[len(evs)-1])
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	return addr
}
