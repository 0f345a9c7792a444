package progress

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var (
	dgA = digest.FromString("a")
	dgB = digest.FromString("b")
	dgC = digest.FromString("c")
)

func at(sec, nsec int) time.Time {
	return time.Date(2025, 11, 25, 10, 0, sec, nsec, time.UTC)
}

func ptr(t time.Time) *time.Time { return &t }

// roundTrip maps s to events, sends each through the wire format, and maps
// them back, merging the single-entry updates into one.
func roundTrip(t *testing.T, s *client.SolveStatus) *client.SolveStatus {
	t.Helper()
	out := &client.SolveStatus{}
	for _, e := range FromSolveStatus(s) {
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatalf("marshal %v: %v", e, err)
		}
		var got buildv1.BuildEvent
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		back := ToSolveStatus(&got)
		if back == nil {
			t.Fatalf("ToSolveStatus(%v) = nil for a progress event", &got)
		}
		out.Vertexes = append(out.Vertexes, back.Vertexes...)
		out.Statuses = append(out.Statuses, back.Statuses...)
		out.Logs = append(out.Logs, back.Logs...)
		out.Warnings = append(out.Warnings, back.Warnings...)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   *client.SolveStatus
	}{
		{
			name: "empty",
			in:   &client.SolveStatus{},
		},
		{
			name: "waiting vertex keeps nil timestamps",
			in: &client.SolveStatus{Vertexes: []*client.Vertex{
				{Digest: dgA, Name: "[internal] load git source"},
			}},
		},
		{
			name: "running, cached and failed vertices",
			in: &client.SolveStatus{Vertexes: []*client.Vertex{
				{Digest: dgA, Name: "git fetch", Started: ptr(at(1, 5))},
				{Digest: dgB, Inputs: []digest.Digest{dgA}, Name: "go mod download", Started: ptr(at(2, 0)), Completed: ptr(at(2, 1)), Cached: true},
				{Digest: dgC, Inputs: []digest.Digest{dgA, dgB}, Name: "go build ./cmd/app", Started: ptr(at(3, 999999999)), Completed: ptr(at(9, 0)), Error: `process "go build" did not complete successfully: exit code: 1`},
			}},
		},
		{
			name: "statuses with progress counters",
			in: &client.SolveStatus{Statuses: []*client.VertexStatus{
				{ID: "sha256:layer1", Vertex: dgA, Name: "pulling", Current: 512, Total: 4096, Timestamp: at(4, 0), Started: ptr(at(3, 0))},
				{ID: "pushing layers", Vertex: dgB, Current: 3, Timestamp: at(5, 0), Started: ptr(at(4, 0)), Completed: ptr(at(5, 0))},
				{ID: "unknown total", Vertex: dgB, Current: 0},
			}},
		},
		{
			name: "logs with binary data",
			in: &client.SolveStatus{Logs: []*client.VertexLog{
				{Vertex: dgC, Stream: 1, Data: []byte("go: downloading example.com/m v1.0.0\n"), Timestamp: at(6, 1)},
				{Vertex: dgC, Stream: 2, Data: []byte{0x00, 0xff, 0xfe, '\r', '\n', 0x1b, '[', '3', '1', 'm'}, Timestamp: at(6, 2)},
			}},
		},
		{
			name: "warnings",
			in: &client.SolveStatus{Warnings: []*client.VertexWarning{
				{Vertex: dgA, Level: 1, Short: []byte("insecure registry"), Detail: [][]byte{[]byte("first paragraph"), []byte("second ✓")}, URL: "https://example.com/why"},
				{Vertex: dgB, Short: []byte("just a summary")},
			}},
		},
		{
			name: "everything, order kept",
			in: &client.SolveStatus{
				Vertexes: []*client.Vertex{
					{Digest: dgB, Name: "second first", Started: ptr(at(1, 0))},
					{Digest: dgA, Name: "first second", Started: ptr(at(0, 0)), Completed: ptr(at(1, 0))},
				},
				Statuses: []*client.VertexStatus{
					{ID: "s", Vertex: dgB, Current: 10, Total: 20, Timestamp: at(1, 0)},
				},
				Logs: []*client.VertexLog{
					{Vertex: dgB, Stream: 1, Data: []byte("out"), Timestamp: at(1, 0)},
					{Vertex: dgA, Stream: 2, Data: []byte("err"), Timestamp: at(0, 1)},
				},
				Warnings: []*client.VertexWarning{
					{Vertex: dgA, Level: 2, Short: []byte("w")},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.in)
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip changed the status\n got: %s\nwant: %s", dump(got), dump(tt.in))
			}
		})
	}
}

func TestFromSolveStatusEvents(t *testing.T) {
	s := &client.SolveStatus{
		Warnings: []*client.VertexWarning{{Vertex: dgA, Short: []byte("w")}},
		Logs:     []*client.VertexLog{{Vertex: dgA, Data: []byte("l")}, nil},
		Statuses: []*client.VertexStatus{nil, {ID: "s", Vertex: dgA}},
		Vertexes: []*client.Vertex{{Digest: dgA}, nil},
	}
	events := FromSolveStatus(s)
	var kinds []string
	for _, e := range events {
		if e.GetBuildId() != "" || e.GetSeq() != 0 || e.GetTime() != nil {
			t.Errorf("event %v has more than its payload set", e)
		}
		switch e.GetEvent().(type) {
		case *buildv1.BuildEvent_Vertex:
			kinds = append(kinds, "vertex")
		case *buildv1.BuildEvent_Status:
			kinds = append(kinds, "status")
		case *buildv1.BuildEvent_Log:
			kinds = append(kinds, "log")
		case *buildv1.BuildEvent_Warning:
			kinds = append(kinds, "warning")
		default:
			kinds = append(kinds, "other")
		}
	}
	want := []string{"vertex", "status", "log", "warning"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("event kinds = %v, want %v", kinds, want)
	}
	if got := FromSolveStatus(nil); got != nil {
		t.Errorf("FromSolveStatus(nil) = %v, want nil", got)
	}
}

func TestFromSolveStatusTimestamps(t *testing.T) {
	events := FromSolveStatus(&client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: dgA, Started: ptr(at(1, 2))}},
		Statuses: []*client.VertexStatus{{ID: "zero time", Vertex: dgA}},
	})
	v := events[0].GetVertex()
	if got := v.GetStarted().AsTime(); !got.Equal(at(1, 2)) {
		t.Errorf("started = %v, want %v", got, at(1, 2))
	}
	if v.GetCompleted() != nil {
		t.Errorf("completed = %v, want unset", v.GetCompleted())
	}
	if ts := events[1].GetStatus().GetTimestamp(); ts != nil {
		t.Errorf("zero status timestamp became %v, want unset", ts)
	}
}

func TestFromSolveStatusDropsWhatTheAPIHasNoFieldFor(t *testing.T) {
	events := FromSolveStatus(&client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: dgA, Name: "v", ProgressGroup: &pb.ProgressGroup{Id: "g", Name: "group"}}},
		Warnings: []*client.VertexWarning{{Vertex: dgA, Short: []byte("w"), SourceInfo: &pb.SourceInfo{Filename: "Dockerfile"}, Range: []*pb.Range{{}}}},
	})
	got := &client.SolveStatus{
		Vertexes: ToSolveStatus(events[0]).Vertexes,
		Warnings: ToSolveStatus(events[1]).Warnings,
	}
	want := &client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: dgA, Name: "v"}},
		Warnings: []*client.VertexWarning{{Vertex: dgA, Short: []byte("w")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", dump(got), dump(want))
	}
}

func TestInvalidUTF8BecomesValid(t *testing.T) {
	bad := string([]byte{'o', 'k', 0xff, 0xfe})
	events := FromSolveStatus(&client.SolveStatus{
		Vertexes: []*client.Vertex{{Digest: dgA, Name: bad, Error: bad}},
		Warnings: []*client.VertexWarning{{Vertex: dgA, Short: []byte(bad), Detail: [][]byte{[]byte(bad)}}},
	})
	for _, e := range events {
		if _, err := proto.Marshal(e); err != nil {
			t.Errorf("marshal %v: %v", e, err)
		}
	}
	w := events[1].GetWarning()
	for _, s := range append([]string{w.GetShort(), events[0].GetVertex().GetName()}, w.GetDetail()...) {
		if !utf8.ValidString(s) || s[:2] != "ok" {
			t.Errorf("got %q, want valid UTF-8 starting with ok", s)
		}
	}
}

func TestToSolveStatusNotProgress(t *testing.T) {
	tests := []struct {
		name string
		e    *buildv1.BuildEvent
	}{
		{"nil event", nil},
		{"no payload", &buildv1.BuildEvent{BuildId: "b", Seq: 1}},
		{"state", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_BUILDING}}}},
		{"result", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Result{Result: &buildv1.BuildResult{Image: "r@sha256:x"}}}},
		{"error", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: 2, Message: "boom"}}}},
		{"vertex without payload", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{}}},
		{"status without payload", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Status{}}},
		{"log without payload", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{}}},
		{"warning without payload", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ToSolveStatus(tt.e); got != nil {
				t.Errorf("ToSolveStatus = %s, want nil", dump(got))
			}
		})
	}
}

// dump shows a status readably in test failures.
func dump(s *client.SolveStatus) string {
	b, err := json.Marshal(s)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
