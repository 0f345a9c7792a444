package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestMain(m *testing.M) {
	reattachBackoff = progress.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, GiveUp: 5 * time.Second}
	os.Exit(m.Run())
}

// logEvs is n log events, "line 1\n" to "line n\n".
func logEvs(n int) []*buildv1.BuildEvent {
	var evs []*buildv1.BuildEvent
	for i := 1; i <= n; i++ {
		evs = append(evs, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: testVertex, Stream: 1, Data: fmt.Appendf(nil, "line %d\n", i)}}})
	}
	return evs
}

// loggedEvents is a successful build with 8 log lines; events 1 to 3 are
// state changes, 4 the vertex, 5 to 12 the log.
func loggedEvents() []*buildv1.BuildEvent {
	evs := successEvents()
	return append(evs[:4:4], append(logEvs(8), evs[5:]...)...)
}

// watchCalls is the from_seq of every WatchBuild call f got.
func watchCalls(f *fakeServer) []uint64 {
	var from []uint64
	for _, c := range f.calls() {
		if w, ok := c.(*buildv1.WatchBuildRequest); ok {
			if w.GetBuildId() != "b-1" {
				from = append(from, 1<<63) // the wrong build: fail the comparison
			}
			from = append(from, w.GetFromSeq())
		}
	}
	return from
}

// rawLogs is the log data of the SolveStatus values a rawjson display
// printed, in order.
func rawLogs(t *testing.T, stderr string) []string {
	t.Helper()
	var logs []string
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var s client.SolveStatus
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			continue // the error line, if any
		}
		for _, l := range s.Logs {
			logs = append(logs, string(l.Data))
		}
	}
	return logs
}

func wantLines(n int) []string {
	var lines []string
	for i := 1; i <= n; i++ {
		lines = append(lines, fmt.Sprintf("line %d\n", i))
	}
	return lines
}

var buildArgs = []string{"--repo", "https://git.example/app.git", "--tag", "r.example/app:v1"}

// TestBuildReattach breaks the CreateImage stream after 5 events and the
// first WatchBuild stream after 4 (2 of them repeats): the display gets
// every event once, in order.
func TestBuildReattach(t *testing.T) {
	for _, cmd := range [][]string{{"build"}, {"builds", "watch"}} {
		for _, mode := range []string{"rawjson", "plain"} {
			t.Run(strings.Join(cmd, " ")+"/"+mode, func(t *testing.T) {
				f := &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 5, 1: 4}, overlap: 2}
				args := append(cmd, "--server", f.start(t), "--progress", mode)
				if cmd[0] == "build" {
					args = append(args, buildArgs...)
				} else {
					args = append(args, "b-1")
				}
				r := runCLI(t, args...)
				if r.code != exitOK || r.stdout != testImage+"\n" {
					t.Fatalf("exit code %d, stdout %q; want 0 and the image\nstderr:\n%s", r.code, r.stdout, r.stderr)
				}
				// build: CreateImage, then from 5, then from 7 (the
				// second stream repeated 4 and 5 and sent 6 and 7).
				want := []uint64{5, 7}
				if cmd[0] == "builds" {
					want = []uint64{0, 5, 7}
				}
				if got := watchCalls(f); !reflect.DeepEqual(got, want) {
					t.Errorf("WatchBuild from_seq = %v, want %v", got, want)
				}
				if mode == "rawjson" {
					if got := rawLogs(t, r.stderr); !reflect.DeepEqual(got, wantLines(8)) {
						t.Errorf("logs shown = %q, want each line once, in order\nstderr:\n%s", got, r.stderr)
					}
					return
				}
				for _, line := range []string{"build b-1: queued", "build b-1: resolved main to 1a2b3c", "build b-1: succeeded", "line 1\n", "line 5\n", "line 8\n"} {
					if n := strings.Count(r.stderr, line); n != 1 {
						t.Errorf("stderr shows %q %d times, want once\n%s", line, n, r.stderr)
					}
				}
				for _, notice := range []string{"build b-1: stream broken (unavailable: fake: connection lost); reattaching after event 5", "reattaching after event 7"} {
					if !strings.Contains(r.stderr, notice) {
						t.Errorf("stderr lacks %q:\n%s", notice, r.stderr)
					}
				}
			})
		}
	}
}

// TestBuildReattachDroppedConnection closes the client's connection in the
// middle of the build, as a server restart does.
func TestBuildReattachDroppedConnection(t *testing.T) {
	stderr := &syncBuffer{}
	f := &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 3}, dropConn: true}
	f.beforeBreak = func() {
		// The client has shown the third event, so it has all three.
		for !strings.Contains(stderr.String(), "build b-1: resolved main") {
			time.Sleep(time.Millisecond)
		}
	}
	addr := f.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	code := run(ctx, append([]string{"buildsvc", "build", "--server", addr, "--progress", "plain"}, buildArgs...), &stdout, stderr)
	if code != exitOK || stdout.String() != testImage+"\n" {
		t.Fatalf("exit code %d, stdout %q; want 0 and the image\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if got := watchCalls(f); !reflect.DeepEqual(got, []uint64{3}) {
		t.Errorf("WatchBuild from_seq = %v, want [3]", got)
	}
	if n := strings.Count(stderr.String(), "line 1\n"); n != 1 {
		t.Errorf("line 1 shown %d times, want once\n%s", n, stderr.String())
	}
}

func TestBuildReattachFails(t *testing.T) {
	tests := []struct {
		name       string
		server     *fakeServer
		wantStderr string
		wantWatch  []uint64
	}{
		{
			name:       "stream breaks before the first event",
			server:     &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 0}},
			wantStderr: "the stream broke before the server named the build, so it cannot be reattached",
		},
		{
			name:       "the build is gone",
			server:     &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 4}, watchErr: status.Error(codes.NotFound, "build b-1 not found")},
			wantStderr: "reattach to build b-1 after event 4: rpc error: code = NotFound desc = build b-1 not found; the build may still be running",
			wantWatch:  []uint64{4},
		},
		{
			name:       "the server stays away",
			server:     &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 4}, watchErr: status.Error(codes.Unavailable, "connection refused")},
			wantStderr: "gave up after",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func(b progress.Backoff) { reattachBackoff = b }(reattachBackoff)
			reattachBackoff.GiveUp = 50 * time.Millisecond
			f := tt.server
			r := runCLI(t, append([]string{"build", "--server", f.start(t), "--progress", "plain"}, buildArgs...)...)
			if r.code != exitFailed || !strings.Contains(r.stderr, tt.wantStderr) || r.stdout != "" {
				t.Errorf("exit code %d, stdout %q, stderr:\n%s\nwant 1 and %q", r.code, r.stdout, r.stderr, tt.wantStderr)
			}
			if got := watchCalls(f); tt.wantWatch != nil && !reflect.DeepEqual(got, tt.wantWatch) {
				t.Errorf("WatchBuild from_seq = %v, want %v", got, tt.wantWatch)
			}
		})
	}
}

func TestBuildDetach(t *testing.T) {
	for _, joined := range []bool{false, true} {
		t.Run(fmt.Sprint("joined=", joined), func(t *testing.T) {
			f := &fakeServer{started: &buildv1.StartBuildResponse{BuildId: "b-7", Joined: joined}}
			r := runCLI(t, append([]string{"build", "--server", f.start(t), "--detach", "--timeout", "10m"}, buildArgs...)...)
			if r.code != exitOK || r.stdout != "b-7\n" {
				t.Fatalf("exit code %d, stdout %q; want 0 and the id\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if got := strings.Contains(r.stderr, "build b-7: joined an identical build"); got != joined {
				t.Errorf("joined notice shown = %v, want %v\nstderr:\n%s", got, joined, r.stderr)
			}
			want := &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "r.example/app:v1", Timeout: durationpb.New(10 * time.Minute)}
			if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
				t.Errorf("server got %v, want StartBuild(%v)", calls, want)
			}
		})
	}
}

func TestBuildDetachErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"invalid", status.Error(codes.InvalidArgument, "image_tag: not a valid reference"), exitUsage, "error: image_tag: not a valid reference"},
		{"queue full", status.Error(codes.ResourceExhausted, "the build queue is full"), exitFailed, "start build: the build queue is full (ResourceExhausted)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{err: tt.err}
			r := runCLI(t, append([]string{"build", "--server", f.start(t), "-d"}, buildArgs...)...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantStderr) || r.stdout != "" {
				t.Errorf("exit code %d, stdout %q, stderr %q; want %d and %q", r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStderr)
			}
		})
	}
}

func TestBuildTimeout(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	r := runCLI(t, append([]string{"build", "--server", f.start(t), "--timeout", "90s"}, buildArgs...)...)
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	if calls := f.calls(); len(calls) != 1 || calls[0].(*buildv1.CreateImageRequest).GetTimeout().AsDuration() != 90*time.Second {
		t.Errorf("server got %v, want a 90s timeout", calls)
	}
	for _, bad := range []string{"--timeout=-1s", "--timeout=soon"} {
		r := runCLI(t, append([]string{"build", "--server", "127.0.0.1:1", bad}, buildArgs...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "timeout") {
			t.Errorf("%s: exit code %d, stderr %q; want 2", bad, r.code, r.stderr)
		}
	}
}

func TestWatchOutcome(t *testing.T) {
	failed := append(loggedEvents()[:5],
		stateEv(buildv1.BuildState_BUILD_STATE_CANCELLED, "cancelled by a user"),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Canceled), Message: "build cancelled"}}},
	)
	tests := []struct {
		name       string
		server     *fakeServer
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "cancelled", server: &fakeServer{events: failed}, args: []string{"b-1"}, wantCode: exitFailed, wantStderr: "build b-1: cancelled: cancelled by a user\nerror: build cancelled\n"},
		{name: "unknown build", server: &fakeServer{watchErr: status.Error(codes.NotFound, "build nope not found")}, args: []string{"nope"}, wantCode: exitUsage, wantStderr: "error: build nope not found\n"},
		{name: "bad progress", args: []string{"--progress", "fancy", "b-1"}, wantCode: exitUsage, wantStderr: `--progress "fancy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := "127.0.0.1:1"
			if tt.server != nil {
				addr = tt.server.start(t)
			}
			r := runCLI(t, append([]string{"builds", "watch", "--server", addr, "--progress", "plain"}, tt.args...)...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantStderr) || r.stdout != "" {
				t.Errorf("exit code %d, stdout %q, stderr:\n%s\nwant %d and %q", r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStderr)
			}
		})
	}
}

// logBuild is a build whose log has a warning and ends with an error:
// events 1-3 states, 4 vertex, 5-12 log lines, 13 warning, 14 state, 15 error.
func logBuild() []*buildv1.BuildEvent {
	evs := loggedEvents()[:12]
	return append(evs,
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{Vertex: testVertex, Short: "log cap reached", Detail: []string{"32 MiB"}}}},
		stateEv(buildv1.BuildState_BUILD_STATE_FAILED, ""),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}}},
	)
}

// TestLogs prints the raw log (--raw) of a build that has ended, or not.
func TestLogs(t *testing.T) {
	tests := []struct {
		name       string
		server     *fakeServer
		args       []string
		wantStdout string
		wantStderr []string
		wantWatch  []uint64
	}{
		{
			name: "running build, no follow: up to the last event there is",
			// The build is at event 8; the fake would send more.
			server:     &fakeServer{events: logBuild(), info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_BUILDING, LastSeq: 8}},
			args:       []string{"--raw", "b-1"},
			wantStdout: strings.Join(wantLines(4), ""),
			wantWatch:  []uint64{0},
		},
		{
			name:       "ended build, no follow",
			server:     &fakeServer{events: logBuild(), info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_FAILED, LastSeq: 15, LogBytesDropped: 1234}},
			args:       []string{"--raw", "b-1"},
			wantStdout: strings.Join(wantLines(8), ""),
			wantStderr: []string{"warning: log cap reached\n  32 MiB\n", "build b-1 failed: go build: exit code 1 (Unknown)", "warning: build b-1: 1234 bytes of output are not in the log"},
			wantWatch:  []uint64{0},
		},
		{
			name:       "nothing yet",
			server:     &fakeServer{events: logBuild(), info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_QUEUED}},
			args:       []string{"--raw", "b-1"},
			wantStdout: "",
		},
		{
			name:       "follow, with two breaks",
			server:     &fakeServer{events: logBuild(), info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_BUILDING, LastSeq: 2}, breaks: map[int]int{0: 6, 1: 3}, overlap: 1},
			args:       []string{"--follow", "--raw", "b-1"},
			wantStdout: strings.Join(wantLines(8), ""),
			wantStderr: []string{"build b-1: stream broken (unavailable: fake: connection lost); reattaching after event 6", "reattaching after event 8", "build b-1 failed: go build: exit code 1 (Unknown)"},
			wantWatch:  []uint64{0, 6, 8},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.server
			r := runCLI(t, append([]string{"builds", "logs", "--server", f.start(t)}, tt.args...)...)
			if r.code != exitOK || r.stdout != tt.wantStdout {
				t.Fatalf("exit code %d, stdout %q; want 0 and %q\nstderr:\n%s", r.code, r.stdout, tt.wantStdout, r.stderr)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if tt.wantStderr == nil && r.stderr != "" {
				t.Errorf("stderr = %q, want nothing", r.stderr)
			}
			if got := watchCalls(f); !reflect.DeepEqual(got, tt.wantWatch) {
				t.Errorf("WatchBuild from_seq = %v, want %v", got, tt.wantWatch)
			}
		})
	}
}

func TestLogsNotFound(t *testing.T) {
	f := &fakeServer{err: status.Error(codes.NotFound, "build nope not found")}
	r := runCLI(t, "builds", "logs", "--server", f.start(t), "-f", "nope")
	if r.code != exitUsage || !strings.Contains(r.stderr, "error: build nope not found") {
		t.Errorf("exit code %d, stderr %q; want 2 and not found", r.code, r.stderr)
	}
}

// listedBuilds is five builds, newest first.
func listedBuilds() []*buildv1.BuildInfo {
	at := func(min, sec int) *timestamppb.Timestamp {
		return timestamppb.New(time.Date(2025, 11, 25, 10, min, sec, 0, time.UTC))
	}
	req := &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", GitCommit: "main", ImageTag: "r.example/app:v1"}
	return []*buildv1.BuildInfo{
		{BuildId: "b-5", Request: req, State: buildv1.BuildState_BUILD_STATE_QUEUED, CreateTime: at(5, 0), QueuePosition: 2},
		{BuildId: "b-4", Request: req, State: buildv1.BuildState_BUILD_STATE_CANCELLED, CreateTime: at(4, 0)},
		{BuildId: "b-3", Request: req, State: buildv1.BuildState_BUILD_STATE_FAILED, Commit: "1a2b3c4d5e6f7a8b9c0d", CreateTime: at(3, 0), StartTime: at(3, 1), EndTime: at(3, 5),
			Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}},
		{BuildId: "b-2", Request: req, State: buildv1.BuildState_BUILD_STATE_SUCCEEDED, Commit: "1a2b3c4d5e6f7a8b9c0d", CreateTime: at(2, 0), StartTime: at(2, 0), EndTime: at(3, 36)},
		{BuildId: "b-1", Request: req, State: buildv1.BuildState_BUILD_STATE_INTERRUPTED, CreateTime: at(1, 0), StartTime: at(1, 0)},
	}
}

// tableRows splits a table into its rows' cells.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, strings.Split(regexpSpaces(line), "\t"))
	}
	return rows
}

// regexpSpaces turns the runs of two or more spaces that separate a table's
// columns into tabs.
func regexpSpaces(line string) string {
	for strings.Contains(line, "   ") {
		line = strings.ReplaceAll(line, "   ", "  ")
	}
	return strings.ReplaceAll(line, "  ", "\t")
}

func TestLs(t *testing.T) {
	defer func(c func() time.Time) { listClock = c }(listClock)
	listClock = func() time.Time { return time.Date(2025, 11, 25, 10, 10, 0, 0, time.UTC) }
	f := &fakeServer{builds: listedBuilds()}
	addr := f.start(t)

	r := runCLI(t, "builds", "ls", "--server", addr, "--limit", "2", "--all", "--state", "Failed", "--state", "BUILDING", "--repo", "https://git.example/app.git")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	rows := tableRows(r.stdout)
	want := [][]string{
		{"BUILD", "STATUS", "REPO", "COMMIT", "TAG", "CREATED", "DURATION", "ERROR"},
		{"b-5", "queued (2 ahead)", "https://git.example/app.git", "-", "r.example/app:v1", "5 minutes ago", "-", "-"},
		{"b-4", "cancelled", "https://git.example/app.git", "-", "r.example/app:v1", "6 minutes ago", "-", "-"},
		{"b-3", "failed", "https://git.example/app.git", "1a2b3c4d5e6f", "r.example/app:v1", "7 minutes ago", "4s", "go build: exit code 1"},
		{"b-2", "succeeded", "https://git.example/app.git", "1a2b3c4d5e6f", "r.example/app:v1", "8 minutes ago", "1m36s", "-"},
	}
	if len(rows) != 6 || !reflect.DeepEqual(rows[:5], want) || rows[5][0] != "b-1" || rows[5][1] != "interrupted" {
		t.Errorf("table =\n%s\nwant rows %q and b-1", r.stdout, want)
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing after the last page", r.stderr)
	}
	var tokens []string
	for _, c := range f.calls() {
		req := c.(*buildv1.ListBuildsRequest)
		tokens = append(tokens, req.GetPageToken())
		wantReq := &buildv1.ListBuildsRequest{
			States:    []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED, buildv1.BuildState_BUILD_STATE_BUILDING},
			GitRepo:   "https://git.example/app.git",
			PageSize:  2,
			PageToken: req.GetPageToken(),
		}
		if !proto.Equal(req, wantReq) {
			t.Errorf("request %v, want %v", req, wantReq)
		}
	}
	if want := []string{"", "2", "4"}; !reflect.DeepEqual(tokens, want) {
		t.Errorf("page tokens = %q, want %q", tokens, want)
	}

	// One page, then the next.
	r = runCLI(t, "builds", "ls", "--server", addr, "--limit", "2")
	if rows := tableRows(r.stdout); r.code != exitOK || len(rows) != 3 || rows[2][0] != "b-4" || r.stderr != "more builds: --page-token 2\n" {
		t.Errorf("exit code %d, stdout:\n%s\nstderr %q; want 2 builds and the next token", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "builds", "ls", "--server", addr, "--limit", "2", "--page-token", "2")
	if rows := tableRows(r.stdout); r.code != exitOK || len(rows) != 3 || rows[1][0] != "b-3" {
		t.Errorf("exit code %d, stdout:\n%s\nwant b-3 and b-2", r.code, r.stdout)
	}
}

func TestLsJSON(t *testing.T) {
	tests := []struct {
		args      []string
		wantIDs   []string
		wantToken string
	}{
		{args: []string{"--limit", "2"}, wantIDs: []string{"b-5", "b-4"}, wantToken: "2"},
		{args: []string{"--limit", "2", "--all"}, wantIDs: []string{"b-5", "b-4", "b-3", "b-2", "b-1"}},
		{args: []string{"--page-token", "5"}, wantIDs: []string{}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := &fakeServer{builds: listedBuilds()}
			r := runCLI(t, append([]string{"builds", "ls", "--server", f.start(t), "-o", "json"}, tt.args...)...)
			if r.code != exitOK {
				t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			var got struct {
				Builds []struct {
					BuildID string `json:"buildId"`
					State   string `json:"state"`
				} `json:"builds"`
				NextPageToken *string `json:"nextPageToken"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
			}
			ids := []string{}
			for _, b := range got.Builds {
				ids = append(ids, b.BuildID)
			}
			if !reflect.DeepEqual(ids, tt.wantIDs) || got.NextPageToken == nil || *got.NextPageToken != tt.wantToken {
				t.Errorf("builds %q, token %v; want %q and %q\n%s", ids, got.NextPageToken, tt.wantIDs, tt.wantToken, r.stdout)
			}
			if len(got.Builds) > 0 && got.Builds[0].State != "BUILD_STATE_QUEUED" {
				t.Errorf("state = %q, want the enum name", got.Builds[0].State)
			}
			if !strings.Contains(r.stdout, `"builds": [`) {
				t.Errorf("the builds key is missing or not a list:\n%s", r.stdout)
			}
		})
	}
}

func TestBuildsUsage(t *testing.T) {
	tests := []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"ls", "--state", "done"}, `--state: unknown state "done": want one of queued, resolving, building, pushing, succeeded, failed, cancelled, interrupted`},
		{[]string{"ls", "--state", "unspecified"}, `unknown state "unspecified"`},
		{[]string{"ls", "--output", "yaml"}, `--output "yaml": want text or json`},
		{[]string{"ls", "--limit", "-1"}, "--limit -1"},
		{[]string{"ls", "--limit", "1001"}, "at most 1000"},
		{[]string{"ls", "extra"}, `unexpected argument "extra"`},
		{[]string{"get", "-o", "xml", "b-1"}, `--output "xml"`},
		{[]string{"cancel", "-o", "xml", "b-1"}, `--output "xml"`},
		{[]string{"cancel"}, "BUILD_ID is missing"},
		{[]string{"logs", "--raw", "-o", "json", "b-1"}, "--raw and --output json: give one of them"},
		{[]string{"watch", "-o", "yaml", "b-1"}, `--output "yaml"`},
		{[]string{"ls", "-q", "--format", "{{.ID}}"}, "--quiet and --format: give one of them"},
		{[]string{"ls", "-q", "-o", "json"}, "--quiet and --output json: give one of them"},
		{[]string{"watch", "b-1", "b-2"}, "want one BUILD_ID, got 2 arguments"},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"ls", "--nope"}, "flag provided but not defined: -nope"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Nothing listens on the server's address: the CLI must stop
			// before any call.
			args := append([]string{"builds"}, tt.args...)
			if len(tt.args) > 1 {
				args = append(args[:2], append([]string{"--server", "127.0.0.1:1"}, args[2:]...)...)
			}
			r := runCLI(t, args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want 2 and %q", r.code, r.stderr, tt.wantStderr)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		state buildv1.BuildState
		want  string
	}{
		{buildv1.BuildState_BUILD_STATE_CANCELLED, "build b-1: cancelled\n"},
		{buildv1.BuildState_BUILD_STATE_BUILDING, "build b-1: building (cancelling)\n"},
		{buildv1.BuildState_BUILD_STATE_SUCCEEDED, "build b-1: succeeded (it had already ended)\n"},
	}
	for _, tt := range tests {
		t.Run(stateName(tt.state), func(t *testing.T) {
			f := &fakeServer{info: &buildv1.BuildInfo{BuildId: "b-1", State: tt.state}}
			addr := f.start(t)
			r := runCLI(t, "builds", "cancel", "--server", addr, "b-1")
			if r.code != exitOK || r.stdout != tt.want {
				t.Errorf("exit code %d, stdout %q; want 0 and %q\nstderr:\n%s", r.code, r.stdout, tt.want, r.stderr)
			}
			// GetBuild finds the build, then CancelBuild.
			if calls := f.calls(); len(calls) != 2 || !proto.Equal(calls[1], &buildv1.CancelBuildRequest{BuildId: "b-1"}) {
				t.Errorf("server got %v, want GetBuild and CancelBuild(b-1)", calls)
			}
			r = runCLI(t, "builds", "cancel", "--server", addr, "--output", "json", "b-1")
			var got map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got["state"] != tt.state.String() {
				t.Errorf("json output %q (%v), want state %s", r.stdout, err, tt.state)
			}
		})
	}
	f := &fakeServer{err: status.Error(codes.NotFound, "build nope not found")}
	if r := runCLI(t, "builds", "cancel", "--server", f.start(t), "nope"); r.code != exitUsage {
		t.Errorf("unknown build: exit code %d, want 2", r.code)
	}
}

func TestParseState(t *testing.T) {
	for _, name := range stateNames() {
		for _, in := range []string{name, strings.ToUpper(name), " " + name, "BUILD_STATE_" + strings.ToUpper(name)} {
			s, err := parseState(in)
			if err != nil || stateName(s) != name {
				t.Errorf("parseState(%q) = %v, %v; want %s", in, s, err, name)
			}
		}
	}
	for _, bad := range []string{"", "unspecified", "BUILD_STATE_UNSPECIFIED", "run", "1"} {
		if _, err := parseState(bad); err == nil {
			t.Errorf("parseState(%q): no error", bad)
		}
	}
}

func TestStateLine(t *testing.T) {
	e := &buildv1.BuildEvent{BuildId: "b-1", Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_QUEUED, QueuePosition: 3}}}
	if got, want := stateLine(e), "build b-1: queued (position 3)"; got != want {
		t.Errorf("stateLine = %q, want %q", got, want)
	}
}

func TestBuildDuration(t *testing.T) {
	start := time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		started, finished *timestamppb.Timestamp
		want              string
	}{
		{nil, nil, "-"},
		{timestamppb.New(start), timestamppb.New(start.Add(4380 * time.Millisecond)), "4.4s"},
		{timestamppb.New(start), timestamppb.New(start.Add(96*time.Second + 400*time.Millisecond)), "1m36s"},
		{timestamppb.New(start), nil, "2m0s"}, // still running at now
	}
	for _, tt := range tests {
		info := &buildv1.BuildInfo{StartTime: tt.started, EndTime: tt.finished}
		if got := buildDuration(info, start.Add(2*time.Minute)); got != tt.want {
			t.Errorf("buildDuration(%v, %v) = %q, want %q", tt.started, tt.finished, got, tt.want)
		}
	}
}
