package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

const (
	testImage  = "registry.example/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testVertex = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

// fakeServer is an in-process Build server. CreateImage and WatchBuild
// stream a fixed list of events (seq i+1 for events[i], build id b-1)
// followed by a fixed error, and can break their streams; the other calls
// answer from fixed records. It records the requests.
type fakeServer struct {
	buildv1.UnimplementedBuildServer

	events []*buildv1.BuildEvent
	err    error // returned after the events, and by the unary calls
	info   *buildv1.BuildInfo
	// block, if not nil, is closed after the events are sent, and then
	// the stream waits for the client to go away.
	block chan struct{}

	// breaks makes stream i (counting CreateImage and WatchBuild calls from
	// 0) break after breaks[i] events: with UNAVAILABLE, or by closing the
	// client's connection if dropConn is set. beforeBreak, if not nil, runs
	// first.
	breaks      map[int]int
	dropConn    bool
	beforeBreak func()
	// watchErr, if not nil, is WatchBuild's answer.
	watchErr error
	// overlap makes WatchBuild send again this many events that the client
	// has already seen, before the ones it asked for.
	overlap int

	started *buildv1.StartBuildResponse // StartBuild's answer
	builds  []*buildv1.BuildInfo        // ListBuilds pages through these

	mu       sync.Mutex
	requests []proto.Message
	streams  int
	conns    []net.Conn
}

func (f *fakeServer) CreateImage(req *buildv1.CreateImageRequest, stream grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	f.record(req)
	return f.send(0, stream)
}

func (f *fakeServer) WatchBuild(req *buildv1.WatchBuildRequest, stream grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	f.record(req)
	if f.watchErr != nil {
		return f.watchErr
	}
	from := max(int(req.GetFromSeq())-f.overlap, 0)
	return f.send(from, stream)
}

// send streams the events after the first from, then breaks the stream,
// blocks or returns f.err.
func (f *fakeServer) send(from int, stream grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	f.mu.Lock()
	n := f.streams
	f.streams++
	f.mu.Unlock()
	breakAfter, breaks := f.breaks[n]
	for i := from; i < len(f.events); i++ {
		if breaks && i-from == breakAfter {
			return f.breakStream(stream)
		}
		e := proto.CloneOf(f.events[i])
		e.BuildId, e.Seq, e.Time = "b-1", uint64(i+1), timestamppb.Now()
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	if f.block != nil {
		close(f.block)
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	return f.err
}

func (f *fakeServer) breakStream(stream grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	if f.beforeBreak != nil {
		f.beforeBreak()
	}
	if !f.dropConn {
		return status.Error(codes.Unavailable, "fake: connection lost")
	}
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (f *fakeServer) GetBuild(_ context.Context, req *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	f.record(req)
	if f.err != nil {
		return nil, f.err
	}
	return f.info, nil
}

func (f *fakeServer) StartBuild(_ context.Context, req *buildv1.StartBuildRequest) (*buildv1.StartBuildResponse, error) {
	f.record(req.GetRequest())
	if f.err != nil {
		return nil, f.err
	}
	return f.started, nil
}

func (f *fakeServer) CancelBuild(_ context.Context, req *buildv1.CancelBuildRequest) (*buildv1.CancelBuildResponse, error) {
	f.record(req)
	if f.err != nil {
		return nil, f.err
	}
	return &buildv1.CancelBuildResponse{Build: f.info}, nil
}

// ListBuilds pages through f.builds; a page token is the index of the
// page's first build.
func (f *fakeServer) ListBuilds(_ context.Context, req *buildv1.ListBuildsRequest) (*buildv1.ListBuildsResponse, error) {
	f.record(req)
	if f.err != nil {
		return nil, f.err
	}
	first := 0
	if req.GetPageToken() != "" {
		var err error
		if first, err = strconv.Atoi(req.GetPageToken()); err != nil || first > len(f.builds) {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q: not a token", req.GetPageToken())
		}
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 50
	}
	end := min(first+size, len(f.builds))
	resp := &buildv1.ListBuildsResponse{Builds: f.builds[first:end]}
	if end < len(f.builds) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (f *fakeServer) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, m)
}

func (f *fakeServer) calls() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// start serves f on a loopback port and returns its address.
func (f *fakeServer) start(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	buildv1.RegisterBuildServer(s, f)
	go func() { _ = s.Serve(&trackingListener{Listener: lis, f: f}) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// trackingListener keeps the fake's connections, so that it can drop them.
type trackingListener struct {
	net.Listener
	f *fakeServer
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.f.mu.Lock()
		l.f.conns = append(l.f.conns, c)
		l.f.mu.Unlock()
	}
	return c, err
}

type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line in-process, as main would.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"buildsvc"}, args...), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r result) lastStdoutLine() string { return lastLine(r.stdout) }

// syncBuffer is a bytes.Buffer that a test can read while the CLI writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func stateEv(s buildv1.BuildState, msg string) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: s, Message: msg}}}
}

func progressEvs() []*buildv1.BuildEvent {
	started := timestamppb.New(time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC))
	completed := timestamppb.New(time.Date(2025, 11, 25, 10, 0, 2, 0, time.UTC))
	return []*buildv1.BuildEvent{
		{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: testVertex, Name: "go build ./cmd/app", Started: started}}},
		{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: testVertex, Stream: 2, Data: []byte("compiling main\n"), Timestamp: started}}},
		{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: testVertex, Name: "go build ./cmd/app", Started: started, Completed: completed}}},
	}
}

func successEvents() []*buildv1.BuildEvent {
	evs := []*buildv1.BuildEvent{
		stateEv(buildv1.BuildState_BUILD_STATE_QUEUED, ""),
		stateEv(buildv1.BuildState_BUILD_STATE_RESOLVING, ""),
		stateEv(buildv1.BuildState_BUILD_STATE_BUILDING, "resolved main to 1a2b3c"),
	}
	evs = append(evs, progressEvs()...)
	return append(evs,
		stateEv(buildv1.BuildState_BUILD_STATE_SUCCEEDED, ""),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Result{Result: &buildv1.BuildResult{Image: testImage, Tag: "registry.example/team/app:v1"}}},
	)
}

func TestBuildSuccess(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "plain",
		"--repo", "https://git.example/app.git", "--commit", "main", "--tag", "registry.example/team/app:v1",
		"--package", "./cmd/app", "--dir", "svc",
		"--build-flag", "-tags=netgo,osusergo", "--build-flag", "-v",
		"--ldflags", "-s -w -X main.v=1",
		"--env", "GOEXPERIMENT=rangefunc", "--env", "GOFLAGS=-mod=mod,x=1", "--env", "EMPTY=",
		"--base-image", "registry.example/base:1",
		"--label", "team=a=b", "--label", "tier=web",
	)
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	if got := r.lastStdoutLine(); got != testImage {
		t.Errorf("last stdout line = %q, want %q", got, testImage)
	}
	if got := lastLine(r.stderr); got != "build b-1: succeeded" {
		t.Errorf("last stderr line = %q, want the final state after the progress", got)
	}
	for _, want := range []string{"build b-1: queued", "build b-1: resolved main to 1a2b3c", "go build ./cmd/app", "compiling main"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	wantReq := &buildv1.CreateImageRequest{
		GitRepo: "https://git.example/app.git", GitCommit: "main", ImageTag: "registry.example/team/app:v1",
		Package: "./cmd/app", Dir: "svc",
		BuildFlags: []string{"-tags=netgo,osusergo", "-v"},
		Ldflags:    "-s -w -X main.v=1",
		Env:        map[string]string{"GOEXPERIMENT": "rangefunc", "GOFLAGS": "-mod=mod,x=1", "EMPTY": ""},
		BaseImage:  "registry.example/base:1",
		Labels:     map[string]string{"team": "a=b", "tier": "web"},
	}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], wantReq) {
		t.Errorf("server got %v, want [%v]", calls, wantReq)
	}
}

func TestBuildProgressModes(t *testing.T) {
	for _, mode := range []string{"auto", "plain", "rawjson", "quiet"} {
		t.Run(mode, func(t *testing.T) {
			addr := (&fakeServer{events: successEvents()}).start(t)
			r := runCLI(t, "build", "--server", addr, "--progress", mode, "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1")
			if r.code != exitOK || r.stdout != testImage+"\n" {
				t.Fatalf("exit code %d, stdout %q; want 0 and the image only\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			states := strings.Contains(r.stderr, "build b-1: queued")
			if wantStates := mode == "plain" || mode == "auto"; states != wantStates {
				t.Errorf("state lines shown = %v, want %v\nstderr:\n%s", states, wantStates, r.stderr)
			}
			switch mode {
			case "quiet":
				if r.stderr != "" {
					t.Errorf("stderr = %q, want nothing", r.stderr)
				}
			case "rawjson":
				// Every line is a JSON SolveStatus.
				for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
					if !json.Valid([]byte(line)) {
						t.Errorf("stderr line is not JSON: %q", line)
					}
				}
			}
		})
	}
}

func TestBuildExitCodes(t *testing.T) {
	failed := append(progressEvs(),
		stateEv(buildv1.BuildState_BUILD_STATE_FAILED, ""),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: `process "go build" did not complete successfully: exit code: 1`}}},
	)
	notFoundEvent := []*buildv1.BuildEvent{
		stateEv(buildv1.BuildState_BUILD_STATE_RESOLVING, ""),
		{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.NotFound), Message: "git_commit: no branch or tag nope"}}},
	}
	valid := []string{"--repo", "https://git.example/app.git", "--tag", "r.example/app:v1"}
	tests := []struct {
		name       string
		server     *fakeServer // nil: no server, the CLI must stop before dialing
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "failed build", server: &fakeServer{events: failed}, args: valid, wantCode: 1, wantStderr: `error: process "go build" did not complete successfully: exit code: 1`},
		{name: "invalid argument", server: &fakeServer{err: status.Error(codes.InvalidArgument, "image_tag: not a valid reference")}, args: valid, wantCode: 2, wantStderr: "error: image_tag: not a valid reference"},
		{name: "commit not found", server: &fakeServer{err: status.Error(codes.NotFound, "git_commit: no branch or tag nope")}, args: valid, wantCode: 2, wantStderr: "error: git_commit: no branch or tag nope"},
		{name: "commit not found as a build error", server: &fakeServer{events: notFoundEvent}, args: valid, wantCode: 2, wantStderr: "error: git_commit: no branch or tag nope"},
		{name: "server error", server: &fakeServer{err: status.Error(codes.Internal, "disk full")}, args: valid, wantCode: 1, wantStderr: "disk full"},
		{name: "stream ends without an outcome", server: &fakeServer{events: progressEvs()}, args: valid, wantCode: 1, wantStderr: "ended before the build did"},
		{name: "missing --repo", args: []string{"--tag", "r.example/app:v1"}, wantCode: 2, wantStderr: "--repo is required"},
		{name: "missing --tag", args: []string{"--repo", "https://git.example/app.git"}, wantCode: 2, wantStderr: "--tag is required"},
		{name: "bad --env", args: append([]string{"--env", "NOEQUALS"}, valid...), wantCode: 2, wantStderr: `--env "NOEQUALS"`},
		{name: "empty --env key", args: append([]string{"--env", "=x"}, valid...), wantCode: 2, wantStderr: "the key is empty"},
		{name: "bad --label", args: append([]string{"--label", "x"}, valid...), wantCode: 2, wantStderr: `--label "x"`},
		{name: "unknown flag", args: append([]string{"--nope"}, valid...), wantCode: 2, wantStderr: "flag provided but not defined: -nope"},
		{name: "flag without value", args: append(valid, "--commit"), wantCode: 2, wantStderr: "flag needs an argument"},
		{name: "unknown --progress", args: append([]string{"--progress", "fancy"}, valid...), wantCode: 2, wantStderr: `--progress "fancy"`},
		{name: "--progress tty without a tty", args: append([]string{"--progress", "tty"}, valid...), wantCode: 2, wantStderr: "--progress tty"},
		{name: "stray argument", args: append([]string{"extra"}, valid...), wantCode: 2, wantStderr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build"}, tt.args...)
			if tt.server != nil {
				args = append(args[:1], append([]string{"--server", tt.server.start(t)}, args[1:]...)...)
			} else {
				args = append(args[:1], append([]string{"--server", "127.0.0.1:1"}, args[1:]...)...)
			}
			r := runCLI(t, args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if strings.HasPrefix(lines[len(lines)-1], "Run '") {
				lines = lines[:len(lines)-1]
			}
			if !strings.HasPrefix(lines[len(lines)-1], "error: ") {
				t.Errorf("the error is not the last thing on stderr:\n%s", r.stderr)
			}
		})
	}
}

func TestBuildInterrupted(t *testing.T) {
	f := &fakeServer{events: successEvents()[:1], block: make(chan struct{})}
	addr := f.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	stderr := &syncBuffer{}
	go func() {
		<-f.block // the server sent its events and waits
		// Interrupt once the client has shown the first state.
		for !strings.Contains(stderr.String(), "queued") {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	code := run(ctx, []string{"buildsvc", "build", "--server", addr, "--progress", "plain", "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1"}, &stdout, stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "error: interrupted (build b-1)") || stdout.Len() != 0 {
		t.Errorf("exit code %d, stdout %q, stderr %q; want 1 and interrupted", code, stdout.String(), stderr.String())
	}
}

func TestServerUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	r := runCLI(t, "build", "--server", addr, "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1")
	if r.code != exitFailed || !strings.Contains(r.stderr, "unavailable") {
		t.Errorf("exit code %d, stderr %q; want 1 and unavailable", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "reattached") {
		t.Errorf("stderr %q talks of reattaching to a build that cannot have started", r.stderr)
	}
}

func TestServerFromEnv(t *testing.T) {
	addr := (&fakeServer{events: successEvents()}).start(t)
	t.Setenv("BUILD_SERVER_ADDR", addr)
	r := runCLI(t, "build", "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1")
	if r.code != exitOK || r.lastStdoutLine() != testImage {
		t.Errorf("exit code %d, stdout %q; want 0 and the image\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestGet(t *testing.T) {
	info := &buildv1.BuildInfo{
		BuildId:    "b-1",
		Request:    &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", GitCommit: "main", ImageTag: "r.example/app:v1", Package: "."},
		State:      buildv1.BuildState_BUILD_STATE_SUCCEEDED,
		Commit:     "1a2b3c",
		CreateTime: timestamppb.New(time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)),
		Result:     &buildv1.BuildResult{Image: testImage, Digest: "sha256:0123"},

		CredentialsGiven: []string{"git: https password for user x-access-token (request)"},
	}
	addr := (&fakeServer{info: info}).start(t)
	for _, cmd := range [][]string{{"get"}, {"builds", "get"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			r := runCLI(t, append(cmd, "--server", addr, "b-1")...)
			if r.code != exitOK {
				t.Fatalf("text: exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			fields := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				name, value, _ := strings.Cut(line, "  ")
				fields[name] = strings.TrimSpace(value)
			}
			for name, want := range map[string]string{"build": "b-1", "state": "succeeded", "ref": "main", "commit": "1a2b3c", "created": "2025-11-25T10:00:00Z", "image": testImage,
				"credentials": "git: https password for user x-access-token (request)"} {
				if fields[name] != want {
					t.Errorf("text output: %s = %q, want %q\n%s", name, fields[name], want, r.stdout)
				}
			}
			if _, ok := fields["base image"]; ok {
				t.Errorf("text output shows an unset field:\n%s", r.stdout)
			}

			r = runCLI(t, append(cmd, "--server", addr, "--output", "json", "b-1")...)
			if r.code != exitOK {
				t.Fatalf("json: exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("json output: %v\n%s", err, r.stdout)
			}
			if got["buildId"] != "b-1" || got["state"] != "BUILD_STATE_SUCCEEDED" || got["request"].(map[string]any)["gitRepo"] != "https://git.example/app.git" {
				t.Errorf("json output = %v", got)
			}
		})
	}
}

func TestGetExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		server     *fakeServer
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "not found", server: &fakeServer{err: status.Error(codes.NotFound, "build nope not found")}, args: []string{"nope"}, wantCode: 2, wantStderr: "error: build nope not found"},
		{name: "server error", server: &fakeServer{err: status.Error(codes.Internal, "store broken")}, args: []string{"b-1"}, wantCode: 1, wantStderr: "store broken"},
		{name: "bad output", args: []string{"--output", "yaml", "b-1"}, wantCode: 2, wantStderr: `--output "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := "127.0.0.1:1"
			if tt.server != nil {
				addr = tt.server.start(t)
			}
			r := runCLI(t, append([]string{"get", "--server", addr}, tt.args...)...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", r.code, r.stderr, tt.wantCode, tt.wantStderr)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
	}{
		{nil, exitOK},
		{[]string{"--help"}, exitOK},
		{[]string{"build", "--help"}, exitOK},
		{[]string{"help", "get"}, exitOK},
		{[]string{"nope"}, exitUsage},
		{[]string{"help", "nope"}, exitUsage},
		{[]string{"--nope"}, exitUsage},
		{[]string{"build"}, exitUsage},
		{[]string{"build", "--"}, exitUsage},
		{[]string{"build", "--env"}, exitUsage},
		{[]string{"build", "--env="}, exitUsage},
		{[]string{"build", "--repo=", "--tag="}, exitUsage},
		{[]string{"build", "--repo", " ", "--tag", "x"}, exitUsage},
		{[]string{"build", "--repo=x", "--tag=y", "--env", "A=1", "--env", "A=2"}, exitUsage},
		{[]string{"build", "--repo=x", "--tag=y", "--progress="}, exitUsage},
		{[]string{"build", "--repo=x", "--tag=y", "--server="}, exitUsage},
		{[]string{"get", ""}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
		})
	}
}

func TestParseKV(t *testing.T) {
	tests := []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{in: nil, want: nil},
		{in: []string{"A=1", "B=", "C=x=y", "D=a,b"}, want: map[string]string{"A": "1", "B": "", "C": "x=y", "D": "a,b"}},
		{in: []string{"A"}, wantErr: "want KEY=VALUE"},
		{in: []string{"=1"}, wantErr: "the key is empty"},
		{in: []string{" A=1"}, wantErr: "leading or trailing space"},
		{in: []string{"A=1", "A=2"}, wantErr: "more than once"},
	}
	for _, tt := range tests {
		got, err := parseKV("env", tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseKV(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseKV(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}
