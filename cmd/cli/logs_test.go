package main

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

const otherVertex = "sha256:2222222222222222222222222222222222222222222222222222222222222222"

// twoStepEvents is a build of two steps that run at once and write
// interleaved output; the second fails.
func twoStepEvents() []*buildv1.BuildEvent {
	t0 := time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(ms int) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond))
	}
	vertex := func(dgst, name string, completed *timestamppb.Timestamp, err string) *buildv1.BuildEvent {
		return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: dgst, Name: name, Started: at(0), Completed: completed, Error: err}}}
	}
	log := func(dgst, data string, ms int) *buildv1.BuildEvent {
		return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: dgst, Stream: 1, Data: []byte(data), Timestamp: at(ms)}}}
	}
	return []*buildv1.BuildEvent{
		stateEv(buildv1.BuildState_BUILD_STATE_BUILDING, ""),
		vertex(testVertex, "go mod download", nil, ""),
		vertex(otherVertex, "go vet ./...", nil, ""),
		log(testVertex, "go: downloading a\n", 120),
		log(otherVertex, "vet: checking\n", 250),
		log(testVertex, "go: downloading b\n", 1500),
		{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{Vertex: otherVertex, Short: "slow step"}}},
		vertex(testVertex, "go mod download", at(2000), ""),
		vertex(otherVertex, "go vet ./...", at(3000), "process did not complete successfully: exit code: 1"),
		stateEv(buildv1.BuildState_BUILD_STATE_FAILED, ""),
		{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go vet: exit code 1"}}},
	}
}

// stepLines parses progressui's plain output: the name of each step
// number, and the lines after the number of each step.
func stepLines(t *testing.T, out string) (names map[string]string, lines map[string][]string) {
	t.Helper()
	names, lines = map[string]string{}, map[string][]string{}
	re := regexp.MustCompile(`^#(\d+) (.*)$`)
	summary := false // in the summary of a failed step's output, between "------" lines
	for _, l := range strings.Split(out, "\n") {
		if l == "------" {
			summary = !summary
			continue
		}
		if l == "" || summary {
			continue
		}
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("line without a step number: %q", l)
			continue
		}
		if _, ok := names[m[1]]; !ok {
			names[m[1]] = m[2]
			continue
		}
		lines[names[m[1]]] = append(lines[names[m[1]]], m[2])
	}
	return names, lines
}

// TestLogsPlain shows a build's steps as BuildKit's plain progress does,
// each line after its step's number.
func TestLogsPlain(t *testing.T) {
	twoSteps := map[string][]string{
		"go mod download": {"0.120 go: downloading a", "1.500 go: downloading b", "DONE 2.0s"},
		"go vet ./...":    {"0.250 vet: checking", "WARN: slow step", "ERROR: process did not complete successfully: exit code: 1"},
	}
	tests := []struct {
		name       string
		events     []*buildv1.BuildEvent
		args       []string
		lastSeq    uint64
		breaks     map[int]int
		wantSteps  map[string][]string
		wantStderr string
	}{
		{
			name:      "succeeded",
			events:    successEvents(),
			lastSeq:   8,
			wantSteps: map[string][]string{"go build ./cmd/app": {"0.000 compiling main", "DONE 2.0s"}},
		},
		{
			name:       "two steps, one failed",
			events:     twoStepEvents(),
			lastSeq:    11,
			wantSteps:  twoSteps,
			wantStderr: "build b-1 failed: go vet: exit code 1 (Unknown)\n",
		},
		{
			name:      "follow, reattached",
			events:    twoStepEvents(),
			args:      []string{"--follow"},
			lastSeq:   2,
			breaks:    map[int]int{0: 5},
			wantSteps: twoSteps,
			wantStderr: "build b-1: stream broken (unavailable: fake: connection lost); reattaching after event 5 in 1ms\n" +
				"build b-1 failed: go vet: exit code 1 (Unknown)\n",
		},
		{
			name:       "running, up to the last event there is",
			events:     twoStepEvents(),
			lastSeq:    4,
			wantSteps:  map[string][]string{"go mod download": {"0.120 go: downloading a"}},
			wantStderr: "note: 2 steps are still running; the output of all but one of them is not shown until they end: --raw and --output json show all of it\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{events: tt.events, info: &buildv1.BuildInfo{BuildId: "b-1", LastSeq: tt.lastSeq}, breaks: tt.breaks}
			r := runCLI(t, append(append([]string{"builds", "logs", "--server", f.start(t)}, tt.args...), "b-1")...)
			if r.code != exitOK || r.stderr != tt.wantStderr {
				t.Fatalf("exit code %d, stderr %q; want 0 and %q\nstdout:\n%s", r.code, r.stderr, tt.wantStderr, r.stdout)
			}
			names, lines := stepLines(t, r.stdout)
			if len(names) != len(tt.wantSteps) {
				t.Errorf("steps %v, want %d\nstdout:\n%s", names, len(tt.wantSteps), r.stdout)
			}
			for step, want := range tt.wantSteps {
				got := lines[step]
				// A step interrupted by another's lines says "#N ..." and
				// goes on under its number again.
				got = deleteValue(got, "...")
				// The display prints a step's warnings before its output
				// when both wait for it: order the lines by their time.
				if !reflect.DeepEqual(sortedLines(got), sortedLines(want)) {
					t.Errorf("step %q: lines %q, want %q\nstdout:\n%s", step, got, want, r.stdout)
				}
				if len(want) > 0 && got[len(got)-1] != want[len(want)-1] {
					t.Errorf("step %q: last line %q, want %q\nstdout:\n%s", step, got[len(got)-1], want[len(want)-1], r.stdout)
				}
			}
		})
	}
}

func sortedLines(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func deleteValue(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// TestLogsJSON prints the raw events, one protojson object a line.
func TestLogsJSON(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		lastSeq  uint64
		wantSeqs int
	}{
		{name: "ended", lastSeq: 11, wantSeqs: 11},
		{name: "running", lastSeq: 4, wantSeqs: 4},
		{name: "follow", args: []string{"-f"}, lastSeq: 4, wantSeqs: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{events: twoStepEvents(), info: &buildv1.BuildInfo{BuildId: "b-1", LastSeq: tt.lastSeq}}
			r := runCLI(t, append(append([]string{"builds", "logs", "--server", f.start(t), "--output", "json"}, tt.args...), "b-1")...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit code %d, stderr %q; want 0 and nothing", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			if len(lines) != tt.wantSeqs {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), tt.wantSeqs, r.stdout)
			}
			want := twoStepEvents()
			for i, line := range lines {
				var e buildv1.BuildEvent
				if err := protojson.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("line %d is not a BuildEvent: %v\n%s", i+1, err, line)
				}
				if e.GetSeq() != uint64(i+1) || e.GetBuildId() != "b-1" {
					t.Errorf("line %d: seq %d of build %q, want %d of b-1", i+1, e.GetSeq(), e.GetBuildId(), i+1)
				}
				if got, wantType := typeOf(&e), typeOf(want[i]); got != wantType {
					t.Errorf("line %d is a %s event, want %s", i+1, got, wantType)
				}
			}
			if !strings.Contains(r.stdout, `"buildId":"b-1"`) || !strings.Contains(r.stdout, `"state":"BUILD_STATE_BUILDING"`) {
				t.Errorf("the events lack the API's JSON names, or are not compact:\n%s", r.stdout)
			}
		})
	}
}

func typeOf(e *buildv1.BuildEvent) string {
	return string(e.ProtoReflect().WhichOneof(e.ProtoReflect().Descriptor().Oneofs().ByName("event")).Name())
}

// TestWatchJSON: watch -o json prints the build's final record, whatever
// its outcome, with watch's exit code.
func TestWatchJSON(t *testing.T) {
	tests := []struct {
		name     string
		events   []*buildv1.BuildEvent
		state    buildv1.BuildState
		wantCode int
	}{
		{name: "succeeded", events: successEvents(), state: buildv1.BuildState_BUILD_STATE_SUCCEEDED, wantCode: exitOK},
		{name: "failed", events: twoStepEvents(), state: buildv1.BuildState_BUILD_STATE_FAILED, wantCode: exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &buildv1.BuildInfo{BuildId: "b-1", State: tt.state}
			f := &fakeServer{events: tt.events, info: info}
			r := runCLI(t, "builds", "watch", "--server", f.start(t), "--progress", "plain", "-o", "json", "b-1")
			var got buildv1.BuildInfo
			if err := protojson.Unmarshal([]byte(r.stdout), &got); r.code != tt.wantCode || err != nil || got.GetState() != tt.state {
				t.Errorf("exit code %d, stdout %q (%v); want %d and the record\nstderr:\n%s", r.code, r.stdout, err, tt.wantCode, r.stderr)
			}
			if tt.wantCode != exitOK && !strings.HasSuffix(r.stderr, "error: go vet: exit code 1\n") {
				t.Errorf("stderr does not end with the build's error:\n%s", r.stderr)
			}
		})
	}
}
