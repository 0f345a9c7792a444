package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Unit tests of the build lifecycle (start, dispatch, run, cancel, persist,
// interrupt) through the server's gRPC methods, with a real history store
// and fakeBuildKit in place of buildkitd.

const testSHA = "0123456789abcdef0123456789abcdef01234567"

// testBase and testBuilder are pinned, so no registry is asked for them
// before queueing.
const (
	testBase    = "registry.example/base/static@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testBuilder = "registry.example/golang:1.26@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// fakeResolver resolves every reference to testSHA, or fails with err.
type fakeResolver struct {
	err   error
	mu    sync.Mutex
	calls int
}

func (r *fakeResolver) Resolve(context.Context, string, string, egress.Auth) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return "", r.err
	}
	return testSHA, nil
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// recordingObserver keeps the events it is told about.
type recordingObserver struct {
	mu     sync.Mutex
	events map[string][]uint64 // build id -> seqs, in the order told
	joined []string
}

func (o *recordingObserver) Event(e *buildv1.BuildEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.events == nil {
		o.events = map[string][]uint64{}
	}
	o.events[e.GetBuildId()] = append(o.events[e.GetBuildId()], e.GetSeq())
}

func (o *recordingObserver) Joined(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.joined = append(o.joined, id)
}

func (o *recordingObserver) Refused(codes.Code) {}

// lifecycleEnv is a server on a fake buildkitd and a fresh store.
type lifecycleEnv struct {
	s     *Server
	fk    *fakeBuildKit
	store *history.Bolt
	res   *fakeResolver
}

// newLifecycleServer starts a server on fk with a store in t.TempDir();
// edit adjusts its config. The server is closed when the test ends.
func newLifecycleServer(t *testing.T, fk *fakeBuildKit, edit func(*Config)) *lifecycleEnv {
	t.Helper()
	store, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return newLifecycleServerOn(t, fk, store, edit)
}

func newLifecycleServerOn(t *testing.T, fk *fakeBuildKit, store *history.Bolt, edit func(*Config)) *lifecycleEnv {
	t.Helper()
	res := &fakeResolver{}
	cfg := Config{
		BuildKitClient:  fk,
		Store:           store,
		Resolver:        res,
		BuilderImage:    testBuilder,
		BaseImage:       testBase,
		DockerConfigDir: t.TempDir(),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Stop the server before the store closes.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_ = s.Close(ctx)
	})
	t.Cleanup(fk.stop) // before Close: a build a test left held ends
	return &lifecycleEnv{s: s, fk: fk, store: store, res: res}
}

// imageRequest asks for registry.example/app:tag.
func imageRequest(tag string) *buildv1.CreateImageRequest {
	return &buildv1.CreateImageRequest{GitRepo: "https://git.example/org/app.git", GitCommit: "main",
		ImageTag: "registry.example/app:" + tag, Package: "./cmd/app"}
}

func (e *lifecycleEnv) start(t *testing.T, req *buildv1.CreateImageRequest) *buildv1.StartBuildResponse {
	t.Helper()
	resp, err := e.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: req})
	if err != nil {
		t.Fatalf("StartBuild %s: %v", req.GetImageTag(), err)
	}
	return resp
}

func (e *lifecycleEnv) get(t *testing.T, id string) *buildv1.BuildInfo {
	t.Helper()
	info, err := e.s.GetBuild(context.Background(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatalf("GetBuild %s: %v", id, err)
	}
	return info
}

// watch returns every event of build id; for a build that has not ended it
// waits until it ends.
func (e *lifecycleEnv) watch(t *testing.T, id string) []*buildv1.BuildEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := &watchStream{ctx: ctx}
	if err := e.s.WatchBuild(&buildv1.WatchBuildRequest{BuildId: id}, w); err != nil {
		t.Fatalf("WatchBuild %s: %v", id, err)
	}
	return w.sent
}

// until polls GetBuild of id until ok says yes.
func (e *lifecycleEnv) until(t *testing.T, id, what string, ok func(*buildv1.BuildInfo) bool) *buildv1.BuildInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info := e.get(t, id)
		if ok(info) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s: waited for %s; it is %v (queue position %d)", id, what, info.GetState(), info.GetQueuePosition())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// started waits for the fake to start a solve and returns its image tag.
func (e *lifecycleEnv) started(t *testing.T) string {
	t.Helper()
	select {
	case tag := <-e.fk.started:
		return tag
	case <-time.After(5 * time.Second):
		t.Fatal("no build reached buildkitd")
		return ""
	}
}

// closeServer closes the server, giving running builds grace to finish.
func (e *lifecycleEnv) closeServer(t *testing.T, grace time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := e.s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// states lists the state changes of evs: "QUEUED(1)" for a queued build
// with one ahead of it.
func states(evs []*buildv1.BuildEvent) string {
	var out []string
	for _, e := range evs {
		if sc := e.GetState(); sc != nil {
			s := strings.TrimPrefix(sc.GetState().String(), "BUILD_STATE_")
			if sc.GetState() == buildv1.BuildState_BUILD_STATE_QUEUED {
				s += fmt.Sprintf("(%d)", sc.GetQueuePosition())
			}
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// index returns the index of the first event in evs that match says yes
// to, -1 if none.
func index(evs []*buildv1.BuildEvent, match func(*buildv1.BuildEvent) bool) int {
	for i, e := range evs {
		if match(e) {
			return i
		}
	}
	return -1
}

func isState(s buildv1.BuildState) func(*buildv1.BuildEvent) bool {
	return func(e *buildv1.BuildEvent) bool { return e.GetState().GetState() == s }
}

// A build goes RESOLVING, QUEUED, BUILDING, PUSHING, SUCCEEDED, with the
// solve's progress in between and its result last; the record and the
// whole log are stored, the observer hears every event in order, and the
// image is the digest buildkitd pushed, built at the commit's time.
func TestBuildSucceeds(t *testing.T) {
	fk := newFakeBuildKit()
	obs := &recordingObserver{}
	e := newLifecycleServer(t, fk, func(c *Config) { c.Observer = obs })
	resp := e.start(t, imageRequest("v1"))
	if resp.GetBuildId() == "" || resp.GetName() != "builds/"+resp.GetBuildId() || resp.GetJoined() {
		t.Fatalf("StartBuild = %v", resp)
	}
	id := resp.GetBuildId()
	evs := e.watch(t, id)

	if got, want := states(evs), "RESOLVING QUEUED(0) BUILDING PUSHING SUCCEEDED"; got != want {
		t.Errorf("states %s, want %s", got, want)
	}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) || ev.GetBuildId() != id {
			t.Fatalf("event %d is seq %d of %q; want seq %d of %s", i, ev.GetSeq(), ev.GetBuildId(), i+1, id)
		}
		if sc := ev.GetState(); sc != nil && sc.GetCommit() != testSHA {
			t.Errorf("state %v has commit %q, want %s", sc.GetState(), sc.GetCommit(), testSHA)
		}
	}
	building := index(evs, isState(buildv1.BuildState_BUILD_STATE_BUILDING))
	pushing := index(evs, isState(buildv1.BuildState_BUILD_STATE_PUSHING))
	succeeded := index(evs, isState(buildv1.BuildState_BUILD_STATE_SUCCEEDED))
	logAt := index(evs, func(e *buildv1.BuildEvent) bool { return string(e.GetLog().GetData()) == "compiling\n" })
	export := index(evs, func(e *buildv1.BuildEvent) bool { return e.GetVertex().GetName() == "exporting to image" })
	if !(building < logAt && logAt < succeeded) || !(pushing < export && export < succeeded) {
		t.Errorf("BUILDING at %d, the step's log at %d, PUSHING at %d, the export at %d, SUCCEEDED at %d", building, logAt, pushing, export, succeeded)
	}
	wantImage := "registry.example/app@" + fakeDigest("registry.example/app:v1")
	last := evs[len(evs)-1].GetResult()
	if last.GetImage() != wantImage || last.GetDigest() != fakeDigest("registry.example/app:v1") || last.GetCommit() != testSHA {
		t.Errorf("last event %v, want the result %s", evs[len(evs)-1], wantImage)
	}

	// The builder and base images are resolved through the gateway, and
	// the image's times are the commit's.
	fk.mu.Lock()
	resolved, epoch := strings.Join(fk.resolved["registry.example/app:v1"], " "), fk.epochs["registry.example/app:v1"]
	fk.mu.Unlock()
	for _, ref := range []string{testBuilder, testBase} {
		if !strings.Contains(resolved, ref) {
			t.Errorf("resolved %q, not %s", resolved, ref)
		}
	}
	if want := strconv.FormatInt(fk.commitTime.Unix(), 10); epoch != want {
		t.Errorf("SOURCE_DATE_EPOCH %q, want the commit's time %s", epoch, want)
	}

	e.closeServer(t, time.Second)
	if _, _, closed := fk.snapshot(); !closed {
		t.Error("Close did not close the BuildKit client")
	}
	info, err := e.store.GetBuild(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED || info.GetResult().GetImage() != wantImage ||
		info.GetLastSeq() != uint64(len(evs)) || info.GetStartTime() == nil || info.GetEndTime() == nil ||
		info.GetCommit() != testSHA || info.GetError() != nil {
		t.Errorf("stored record %v; want SUCCEEDED with %s, last seq %d, start and end times", info, wantImage, len(evs))
	}
	stored, err := e.store.Events(context.Background(), id, 0, 1000)
	if err != nil || len(stored) != len(evs) || states(stored) != states(evs) {
		t.Errorf("stored %d events (%v), states %s; want the %d watched", len(stored), err, states(stored), len(evs))
	}
	obs.mu.Lock()
	seqs := fmt.Sprint(obs.events[id])
	obs.mu.Unlock()
	var want []uint64
	for i := range evs {
		want = append(want, uint64(i+1))
	}
	if seqs != fmt.Sprint(want) {
		t.Errorf("observer heard seqs %s, want %v", seqs, want)
	}
	list, err := e.s.ListBuilds(context.Background(), &buildv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) != 1 || list.GetBuilds()[0].GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Errorf("ListBuilds = %v, %v; want the one SUCCEEDED build", list, err)
	}
}

// CreateImage streams the whole log of the build it starts, up to the
// result.
func TestCreateImageStreamsTheBuild(t *testing.T) {
	e := newLifecycleServer(t, newFakeBuildKit(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := &watchStream{ctx: ctx}
	if err := e.s.CreateImage(imageRequest("v1"), w); err != nil {
		t.Fatal(err)
	}
	if got, want := states(w.sent), "RESOLVING QUEUED(0) BUILDING PUSHING SUCCEEDED"; got != want {
		t.Errorf("states %s, want %s", got, want)
	}
	if len(w.sent) == 0 || w.sent[len(w.sent)-1].GetResult() == nil {
		t.Errorf("the stream does not end with the result: %v", w.sent)
	}
	// A bad request is refused before anything is queued.
	err := e.s.CreateImage(&buildv1.CreateImageRequest{GitRepo: "https://git.example/org/app.git"}, &watchStream{ctx: ctx})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "image_tag") {
		t.Errorf("CreateImage without a tag: %v, want InvalidArgument naming image_tag", err)
	}
}

// With one slot, builds run one at a time in the order they came; those
// waiting are told their place (0 = next) and told again as it moves up;
// a request past the queue's size is refused.
func TestDispatchOrderAndQueuePositions(t *testing.T) {
	fk := newFakeBuildKit()
	fk.hold = true
	e := newLifecycleServer(t, fk, func(c *Config) { c.MaxConcurrent, c.QueueSize = 1, 2 })
	a := e.start(t, imageRequest("a")).GetBuildId()
	if tag := e.started(t); tag != "registry.example/app:a" {
		t.Fatalf("first solve is of %s, want a", tag)
	}
	b := e.start(t, imageRequest("b")).GetBuildId()
	c := e.start(t, imageRequest("c")).GetBuildId()
	for _, tt := range []struct {
		id    string
		state buildv1.BuildState
		pos   int32
	}{
		{a, buildv1.BuildState_BUILD_STATE_BUILDING, 0},
		{b, buildv1.BuildState_BUILD_STATE_QUEUED, 0},
		{c, buildv1.BuildState_BUILD_STATE_QUEUED, 1},
	} {
		if info := e.get(t, tt.id); info.GetState() != tt.state || info.GetQueuePosition() != tt.pos {
			t.Errorf("build %s is %v at %d, want %v at %d", tt.id, info.GetState(), info.GetQueuePosition(), tt.state, tt.pos)
		}
	}
	_, err := e.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: imageRequest("d")})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a request with the queue full: %v, want ResourceExhausted", err)
	}

	fk.release <- nil // a succeeds; b starts, c moves up
	if tag := e.started(t); tag != "registry.example/app:b" {
		t.Fatalf("second solve is of %s, want b", tag)
	}
	e.until(t, c, "position 0", func(i *buildv1.BuildInfo) bool { return i.GetQueuePosition() == 0 })
	fk.release <- nil
	if tag := e.started(t); tag != "registry.example/app:c" {
		t.Fatalf("third solve is of %s, want c", tag)
	}
	fk.release <- nil

	if got, want := states(e.watch(t, c)), "RESOLVING QUEUED(1) QUEUED(0) BUILDING PUSHING SUCCEEDED"; got != want {
		t.Errorf("c's states %s, want %s", got, want)
	}
	for _, id := range []string{a, b, c} {
		if s := e.get(t, id).GetState(); s != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
			t.Errorf("build %s is %v, want SUCCEEDED", id, s)
		}
	}
	builds, _, _ := fk.snapshot()
	if got := fmt.Sprint(builds); got != "[registry.example/app:a registry.example/app:b registry.example/app:c]" {
		t.Errorf("buildkitd ran %s, want a, b, c", got)
	}
	list, err := e.s.ListBuilds(context.Background(), &buildv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) != 3 {
		t.Errorf("ListBuilds: %v, %v; want the 3 builds and not the refused one", list, err)
	}
}

// A queued build that is cancelled never reaches buildkitd; a running one
// is stopped there (its solve's context ends); both end CANCELLED, and a
// cancel of an ended build changes nothing.
func TestCancelQueuedAndRunningBuilds(t *testing.T) {
	fk := newFakeBuildKit()
	fk.hold = true
	e := newLifecycleServer(t, fk, func(c *Config) { c.MaxConcurrent = 1 })
	running := e.start(t, imageRequest("running")).GetBuildId()
	e.started(t)
	queued := e.start(t, imageRequest("queued")).GetBuildId()

	cancel := func(id string) *buildv1.BuildInfo {
		t.Helper()
		resp, err := e.s.CancelBuild(context.Background(), &buildv1.CancelBuildRequest{BuildId: "builds/" + id})
		if err != nil {
			t.Fatalf("CancelBuild %s: %v", id, err)
		}
		return resp.GetBuild()
	}
	for _, id := range []string{queued, running} {
		info := cancel(id)
		if info.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED || codes.Code(info.GetError().GetCode()) != codes.Canceled {
			t.Errorf("cancelled build %s is %v with %v, want CANCELLED, Canceled", id, info.GetState(), info.GetError())
		}
	}
	builds, cancelled, _ := fk.snapshot()
	if fmt.Sprint(builds) != "[registry.example/app:running]" || fmt.Sprint(cancelled) != "[registry.example/app:running]" {
		t.Errorf("buildkitd ran %v and saw %v cancelled; want only the running build, cancelled", builds, cancelled)
	}
	if got, want := states(e.watch(t, queued)), "RESOLVING QUEUED(0) CANCELLED"; got != want {
		t.Errorf("queued build's states %s, want %s", got, want)
	}
	if got, want := states(e.watch(t, running)), "RESOLVING QUEUED(0) BUILDING CANCELLED"; got != want {
		t.Errorf("running build's states %s, want %s", got, want)
	}
	if again := cancel(running); again.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED || again.GetLastSeq() != e.get(t, running).GetLastSeq() {
		t.Errorf("a second cancel gives %v", again)
	}
	_, err := e.s.CancelBuild(context.Background(), &buildv1.CancelBuildRequest{BuildId: "20260101-000000.000000-0000000000"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("cancel of a build that does not exist: %v, want NotFound", err)
	}

	e.closeServer(t, time.Second)
	for _, id := range []string{queued, running} {
		info, err := e.store.GetBuild(context.Background(), id)
		if err != nil || info.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
			t.Errorf("stored %s: %v, %v; want CANCELLED", id, info, err)
		}
		evs, _ := e.store.Events(context.Background(), id, 0, 100)
		if len(evs) == 0 || codes.Code(evs[len(evs)-1].GetError().GetCode()) != codes.Canceled {
			t.Errorf("stored log of %s does not end with the Canceled error: %v", id, evs)
		}
	}
}

// A build that fails ends FAILED with the code of what failed, in the
// record and as the last event of the stored log.
func TestBuildFailures(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fake    func(*fakeBuildKit)
		timeout time.Duration
		code    codes.Code // codes.OK: any code but OK
		message string     // in the error's message
	}{
		{"a step exits non-zero", func(f *fakeBuildKit) {
			f.fail = func(string, int) error { return exitError(compileDigest, 1) }
		}, 0, codes.OK, "did not complete successfully: exit code: 1"},
		{"buildkitd drops the solve", func(f *fakeBuildKit) {
			f.fail = func(string, int) error { return status.Error(codes.Unavailable, "error reading from server: EOF") }
		}, 0, codes.Unavailable, "EOF"},
		{"buildkitd gone before the build", func(f *fakeBuildKit) {
			f.buildErr = status.Error(codes.Unavailable, "connection error")
		}, 0, codes.Unavailable, "connection error"},
		{"workers cannot be listed", func(f *fakeBuildKit) {
			f.listErr = errors.New("dial unix /run/buildkit/buildkitd.sock: connect: no such file")
		}, 0, codes.Unavailable, "buildkitd unavailable"},
		{"no workers", func(f *fakeBuildKit) { f.workers = []*client.WorkerInfo{} }, 0, codes.OK, "no workers"},
		{"an image that does not exist", func(f *fakeBuildKit) {
			f.resolveErr = status.Error(codes.NotFound, "not found")
		}, 0, codes.NotFound, "image"},
		{"no image digest", func(f *fakeBuildKit) { f.noDigest = true }, 0, codes.OK, "no image digest"},
		{"time runs out", func(f *fakeBuildKit) { f.hold = true }, 50 * time.Millisecond, codes.DeadlineExceeded, "timed out"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fk := newFakeBuildKit()
			tt.fake(fk)
			e := newLifecycleServer(t, fk, nil)
			req := imageRequest("v1")
			if tt.timeout > 0 {
				req.Timeout = durationpb.New(tt.timeout)
			}
			id := e.start(t, req).GetBuildId()
			evs := e.watch(t, id)
			e.closeServer(t, time.Second)

			info, err := e.store.GetBuild(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			berr := info.GetError()
			if info.GetState() != buildv1.BuildState_BUILD_STATE_FAILED || berr == nil || info.GetResult() != nil ||
				(tt.code == codes.OK && codes.Code(berr.GetCode()) == codes.OK) ||
				(tt.code != codes.OK && codes.Code(berr.GetCode()) != tt.code) ||
				!strings.Contains(berr.GetMessage(), tt.message) {
				t.Errorf("stored %v with %v; want FAILED, code %v, a message with %q", info.GetState(), berr, tt.code, tt.message)
			}
			last := evs[len(evs)-1].GetError()
			if last.GetCode() != berr.GetCode() || last.GetMessage() != berr.GetMessage() {
				t.Errorf("last event %v, want the record's error %v", evs[len(evs)-1], berr)
			}
			if st := states(evs); !strings.HasPrefix(st, "RESOLVING QUEUED(0) BUILDING ") || !strings.HasSuffix(st, " FAILED") {
				t.Errorf("states %s, want RESOLVING QUEUED(0) BUILDING ... FAILED", st)
			}
			stored, _ := e.store.Events(context.Background(), id, 0, 1000)
			if len(stored) != len(evs) {
				t.Errorf("stored %d events, watched %d", len(stored), len(evs))
			}
			if _, cancelled, _ := fk.snapshot(); (tt.timeout > 0) != (len(cancelled) == 1) {
				t.Errorf("buildkitd saw %v cancelled", cancelled)
			}
		})
	}
}

// Close interrupts queued builds at once and running ones when its context
// ends, stores them INTERRUPTED before it returns, and refuses new
// requests; a build that ends within the grace period keeps its outcome.
func TestCloseInterruptsBuilds(t *testing.T) {
	t.Run("past the grace period", func(t *testing.T) {
		fk := newFakeBuildKit()
		fk.hold = true
		e := newLifecycleServer(t, fk, func(c *Config) { c.MaxConcurrent = 1 })
		running := e.start(t, imageRequest("running")).GetBuildId()
		e.started(t)
		queued := e.start(t, imageRequest("queued")).GetBuildId()
		e.closeServer(t, 50*time.Millisecond)

		for _, id := range []string{running, queued} {
			info, err := e.store.GetBuild(context.Background(), id)
			if err != nil || info.GetState() != buildv1.BuildState_BUILD_STATE_INTERRUPTED ||
				codes.Code(info.GetError().GetCode()) != codes.Unavailable || info.GetEndTime() == nil {
				t.Errorf("stored %s: %v (%v); want INTERRUPTED, Unavailable", id, info, err)
			}
			evs, _ := e.store.Events(context.Background(), id, 0, 100)
			if len(evs) == 0 || uint64(len(evs)) != info.GetLastSeq() || evs[len(evs)-1].GetError() == nil {
				t.Errorf("stored log of %s: %d events, record's last seq %d; want it whole, ending with the error", id, len(evs), info.GetLastSeq())
			}
		}
		builds, cancelled, closed := fk.snapshot()
		if fmt.Sprint(builds) != "[registry.example/app:running]" || fmt.Sprint(cancelled) != "[registry.example/app:running]" || !closed {
			t.Errorf("buildkitd ran %v, saw %v cancelled, closed %v; want the running build stopped and the client closed", builds, cancelled, closed)
		}
		_, err := e.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: imageRequest("late")})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("a request after Close: %v, want Unavailable", err)
		}
	})
	t.Run("within the grace period", func(t *testing.T) {
		fk := newFakeBuildKit()
		fk.hold = true
		e := newLifecycleServer(t, fk, nil)
		id := e.start(t, imageRequest("v1")).GetBuildId()
		e.started(t)
		closed := make(chan error, 1)
		go func() { closed <- e.s.Close(context.Background()) }()
		// Close waits for the running build; requests are refused meanwhile.
		e.until(t, id, "Close to begin", func(*buildv1.BuildInfo) bool { return e.s.stopping.Load() })
		fk.release <- nil
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if info, err := e.store.GetBuild(context.Background(), id); err != nil || info.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
			t.Errorf("stored %v (%v), want SUCCEEDED", info, err)
		}
	})
}

// A new server on the store of one that stopped without ending its builds
// marks them INTERRUPTED, appending the state and the error after the last
// stored event (also one the record does not count yet); ended builds are
// left alone.
func TestNewServerInterruptsLeftovers(t *testing.T) {
	ctx := context.Background()
	store, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	state := func(id string, seq uint64, s buildv1.BuildState) *buildv1.BuildEvent {
		return &buildv1.BuildEvent{BuildId: id, Seq: seq, Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: s, Commit: testSHA}}}
	}
	for _, tt := range []struct {
		id    string
		state buildv1.BuildState
		seq   uint64 // the record's last seq
		evs   []buildv1.BuildState
	}{
		{"building", buildv1.BuildState_BUILD_STATE_BUILDING, 2, []buildv1.BuildState{
			buildv1.BuildState_BUILD_STATE_RESOLVING, buildv1.BuildState_BUILD_STATE_QUEUED, buildv1.BuildState_BUILD_STATE_BUILDING}},
		{"queued", buildv1.BuildState_BUILD_STATE_QUEUED, 2, []buildv1.BuildState{
			buildv1.BuildState_BUILD_STATE_RESOLVING, buildv1.BuildState_BUILD_STATE_QUEUED}},
		{"done", buildv1.BuildState_BUILD_STATE_SUCCEEDED, 1, []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_SUCCEEDED}},
	} {
		if err := store.PutBuild(ctx, &buildv1.BuildInfo{BuildId: tt.id, State: tt.state, Commit: testSHA, LastSeq: tt.seq}); err != nil {
			t.Fatal(err)
		}
		var evs []*buildv1.BuildEvent
		for i, s := range tt.evs {
			evs = append(evs, state(tt.id, uint64(i+1), s))
		}
		if err := store.AppendEvents(ctx, tt.id, evs); err != nil {
			t.Fatal(err)
		}
	}
	e := newLifecycleServerOn(t, newFakeBuildKit(), store, nil)

	for _, tt := range []struct {
		id     string
		state  buildv1.BuildState
		states string
	}{
		{"building", buildv1.BuildState_BUILD_STATE_INTERRUPTED, "RESOLVING QUEUED(0) BUILDING INTERRUPTED"},
		{"queued", buildv1.BuildState_BUILD_STATE_INTERRUPTED, "RESOLVING QUEUED(0) INTERRUPTED"},
		{"done", buildv1.BuildState_BUILD_STATE_SUCCEEDED, "SUCCEEDED"},
	} {
		info := e.get(t, tt.id)
		evs := e.watch(t, tt.id)
		if info.GetState() != tt.state || states(evs) != tt.states || info.GetLastSeq() != uint64(len(evs)) {
			t.Errorf("%s: %v, last seq %d, states %s; want %v, %s, last seq %d", tt.id, info.GetState(), info.GetLastSeq(), states(evs), tt.state, tt.states, len(evs))
		}
		if tt.state != buildv1.BuildState_BUILD_STATE_INTERRUPTED {
			continue
		}
		last := evs[len(evs)-1]
		if codes.Code(info.GetError().GetCode()) != codes.Unavailable || info.GetEndTime() == nil ||
			last.GetError().GetCode() != info.GetError().GetCode() || last.GetSeq() != uint64(len(evs)) {
			t.Errorf("%s: error %v, end %v, last event %v; want Unavailable, an end time, the error last", tt.id, info.GetError(), info.GetEndTime(), last)
		}
	}
}

// Identical requests of one tenant share one build while it is queued or
// running, whatever their timeouts; another image is another build, and
// once the build has ended the same request starts a new one.
func TestIdenticalRequestsJoin(t *testing.T) {
	fk := newFakeBuildKit()
	fk.hold = true
	obs := &recordingObserver{}
	e := newLifecycleServer(t, fk, func(c *Config) { c.MaxConcurrent, c.Observer = 1, obs })
	first := e.start(t, imageRequest("v1"))
	e.started(t)
	longer := imageRequest("v1")
	longer.Timeout = durationpb.New(time.Hour)
	for _, tt := range []struct {
		name   string
		req    *buildv1.CreateImageRequest
		joined bool
	}{
		{"the same request", imageRequest("v1"), true},
		{"another timeout", longer, true},
		{"another image", imageRequest("v2"), false},
	} {
		resp := e.start(t, tt.req)
		if resp.GetJoined() != tt.joined || (resp.GetBuildId() == first.GetBuildId()) != tt.joined {
			t.Errorf("%s: build %s, joined %v; want joined %v to %s", tt.name, resp.GetBuildId(), resp.GetJoined(), tt.joined, first.GetBuildId())
		}
	}
	if info := e.get(t, first.GetBuildId()); info.GetJoined() != 2 {
		t.Errorf("joined = %d, want 2", info.GetJoined())
	}
	obs.mu.Lock()
	joined := fmt.Sprint(obs.joined)
	obs.mu.Unlock()
	if want := fmt.Sprint([]string{first.GetBuildId(), first.GetBuildId()}); joined != want {
		t.Errorf("observer heard joins %s, want %s", joined, want)
	}
	if n := e.res.count(); n != 4 {
		t.Errorf("%d resolves, want 4: a request that joins still resolves its ref", n)
	}
	fk.release <- nil // v1
	e.started(t)
	fk.release <- nil // v2
	e.until(t, first.GetBuildId(), "SUCCEEDED", func(i *buildv1.BuildInfo) bool { return ended(i.GetState()) })

	again := e.start(t, imageRequest("v1"))
	if again.GetJoined() || again.GetBuildId() == first.GetBuildId() {
		t.Errorf("the request after the build ended joined %s", again.GetBuildId())
	}
	e.started(t)
	fk.release <- nil
	builds, _, _ := fk.snapshot()
	if got := fmt.Sprint(builds); got != "[registry.example/app:v1 registry.example/app:v2 registry.example/app:v1]" {
		t.Errorf("buildkitd ran %s, want v1, v2, v1", got)
	}
}

// A ref that does not resolve is refused before anything is queued or
// stored.
func TestUnresolvedRefIsRefused(t *testing.T) {
	fk := newFakeBuildKit()
	e := newLifecycleServer(t, fk, nil)
	e.res.err = fmt.Errorf("resolve main: %w", ErrRefNotFound)
	_, err := e.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: imageRequest("v1")})
	if status.Code(err) != codes.NotFound {
		t.Errorf("StartBuild of a missing ref: %v, want NotFound", err)
	}
	list, _, _ := e.store.List(context.Background(), history.Filter{AnyTenant: true, Limit: 10})
	if builds, _, _ := fk.snapshot(); len(list) != 0 || len(builds) != 0 {
		t.Errorf("stored %v and built %v for a refused request", list, builds)
	}
}

// A compile that fails because the module cache lacked a module (a cached
// download step whose modules were pruned) runs once more, in a new solve
// with a new download step, and the build says so; any other failure, or
// the same one again, ends the build.
func TestModulesDownloadedAgain(t *testing.T) {
	missing := "go: downloading example.com/m v1.0.0\n"
	for _, tt := range []struct {
		name    string
		fails   int    // how many solves fail
		output  string // the compile step's output of a failing solve
		state   buildv1.BuildState
		solves  int
		warning bool
	}{
		{"missing modules", 1, missing, buildv1.BuildState_BUILD_STATE_SUCCEEDED, 2, true},
		{"missing modules twice", 2, missing, buildv1.BuildState_BUILD_STATE_FAILED, 2, true},
		{"another failure", 1, "main.go:3: undefined: x\n", buildv1.BuildState_BUILD_STATE_FAILED, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fk := newFakeBuildKit()
			fk.fail = func(_ string, attempt int) error {
				if attempt < tt.fails {
					return exitError(compileDigest, 1)
				}
				return nil
			}
			fk.output = func(_ string, attempt int) string {
				if attempt < tt.fails {
					return tt.output
				}
				return "compiling\n"
			}
			e := newLifecycleServer(t, fk, nil)
			id := e.start(t, imageRequest("v1")).GetBuildId()
			evs := e.watch(t, id)
			if s := e.get(t, id).GetState(); s != tt.state {
				t.Errorf("build is %v, want %v", s, tt.state)
			}
			warned := index(evs, func(e *buildv1.BuildEvent) bool { return e.GetWarning() != nil }) >= 0
			fk.mu.Lock()
			defs := append([]digest.Digest(nil), fk.defs...)
			fk.mu.Unlock()
			if len(defs) != tt.solves || warned != tt.warning {
				t.Fatalf("%d solves, a warning: %v; want %d, %v", len(defs), warned, tt.solves, tt.warning)
			}
			if len(defs) == 2 && defs[0] == defs[1] {
				t.Error("the second solve has the graph of the first: its download step is BuildKit's cached one")
			}
		})
	}
}

// Cleanup prunes BuildKit's cache twice: all but the cache mounts by age
// and size, then the cache mounts (the shared Go caches) by age alone; it
// reports what both freed.
func TestCleanupPrunesBuildKit(t *testing.T) {
	fk := newFakeBuildKit()
	fk.pruneRecords = []client.UsageInfo{{ID: "r1", Size: 100}, {ID: "r2", Size: 20}}
	p := CleanupPolicy{KeepDuration: 48 * time.Hour, KeepStorage: 1 << 30}
	e := newLifecycleServer(t, fk, func(c *Config) { c.Cleanup = p })
	resp, err := e.s.Cleanup(context.Background(), &buildv1.CleanupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBuildkitBytesFreed() != 240 || resp.GetBuildkitRecordsPruned() != 4 {
		t.Errorf("freed %d bytes in %d records, want 240 in 4", resp.GetBuildkitBytesFreed(), resp.GetBuildkitRecordsPruned())
	}
	fk.mu.Lock()
	prunes := fk.prunes
	fk.mu.Unlock()
	want := []client.PruneInfo{
		{KeepDuration: p.KeepDuration, MaxUsedSpace: p.KeepStorage, Filter: []string{"type!=" + string(client.UsageRecordTypeCacheMount)}},
		{KeepDuration: p.KeepDuration, Filter: []string{"type==" + string(client.UsageRecordTypeCacheMount)}},
	}
	if fmt.Sprintf("%+v", prunes) != fmt.Sprintf("%+v", want) {
		t.Errorf("prunes %+v, want %+v", prunes, want)
	}
}
