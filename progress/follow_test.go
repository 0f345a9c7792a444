package progress

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// events returns a recv function that gives evs in order, then err.
func events(err error, evs ...*buildv1.BuildEvent) func() (*buildv1.BuildEvent, error) {
	return func() (*buildv1.BuildEvent, error) {
		if len(evs) == 0 {
			return nil, err
		}
		e := evs[0]
		evs = evs[1:]
		return e, nil
	}
}

func stateEvent(s buildv1.BuildState) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{BuildId: "b1", Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: s}}}
}

func vertexEvent(name string) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: dgA.String(), Name: name}}}
}

func logEvent(data string) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: dgA.String(), Stream: 1, Data: []byte(data)}}}
}

// collect drains ch until Follow closes it.
func collect(ch <-chan *client.SolveStatus) <-chan []*client.SolveStatus {
	done := make(chan []*client.SolveStatus, 1)
	go func() {
		var got []*client.SolveStatus
		for s := range ch {
			got = append(got, s)
		}
		done <- got
	}()
	return done
}

func TestFollowResult(t *testing.T) {
	want := &buildv1.BuildResult{Image: "registry.example/app@sha256:abc", Tag: "registry.example/app:v1"}
	recv := events(nil,
		stateEvent(buildv1.BuildState_BUILD_STATE_QUEUED),
		vertexEvent("git fetch"),
		stateEvent(buildv1.BuildState_BUILD_STATE_BUILDING),
		logEvent("hello\n"),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Result{Result: want}},
		vertexEvent("never read"),
	)
	ch := make(chan *client.SolveStatus)
	got := collect(ch)
	var states []buildv1.BuildState
	res, berr, err := Follow(context.Background(), recv, ch, func(e *buildv1.BuildEvent) {
		states = append(states, e.GetState().GetState())
	})
	if err != nil || berr != nil {
		t.Fatalf("Follow: error %v, build error %v", err, berr)
	}
	if res != want {
		t.Errorf("result = %v, want %v", res, want)
	}
	progress := <-got
	if len(progress) != 2 || progress[0].Vertexes[0].Name != "git fetch" || string(progress[1].Logs[0].Data) != "hello\n" {
		t.Errorf("progress = %s, want the vertex then the log", dumpAll(progress))
	}
	if len(states) != 2 || states[0] != buildv1.BuildState_BUILD_STATE_QUEUED || states[1] != buildv1.BuildState_BUILD_STATE_BUILDING {
		t.Errorf("states = %v, want QUEUED, BUILDING", states)
	}
}

func TestFollowBuildError(t *testing.T) {
	want := &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}
	recv := events(nil,
		vertexEvent("go build"),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: want}},
	)
	ch := make(chan *client.SolveStatus, 10)
	res, berr, err := Follow(context.Background(), recv, ch, nil)
	if err != nil || res != nil || berr != want {
		t.Fatalf("Follow = %v, %v, %v; want the build error only", res, berr, err)
	}
	if n := len(<-collect(ch)); n != 1 {
		t.Errorf("got %d progress updates, want 1", n)
	}
}

func TestFollowNoOutcome(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection refused")
	tests := []struct {
		name  string
		recv  func() (*buildv1.BuildEvent, error)
		check func(t *testing.T, err error)
	}{
		{
			name: "stream ends early",
			recv: events(io.EOF, vertexEvent("v")),
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrNoOutcome) {
					t.Errorf("err = %v, want ErrNoOutcome", err)
				}
			},
		},
		{
			name: "gRPC error keeps its status",
			recv: events(unavailable),
			check: func(t *testing.T, err error) {
				if !errors.Is(err, unavailable) || status.Code(err) != codes.Unavailable {
					t.Errorf("err = %v (code %v), want it to wrap the Unavailable status", err, status.Code(err))
				}
			},
		},
		{
			name: "empty result event",
			recv: events(nil, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Result{}}),
			check: func(t *testing.T, err error) {
				if err == nil {
					t.Error("err = nil, want an error")
				}
			},
		},
		{
			name: "empty error event",
			recv: events(nil, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{}}),
			check: func(t *testing.T, err error) {
				if err == nil {
					t.Error("err = nil, want an error")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := make(chan *client.SolveStatus, 10)
			res, berr, err := Follow(context.Background(), tt.recv, ch, nil)
			if res != nil || berr != nil {
				t.Errorf("got result %v, build error %v; want neither", res, berr)
			}
			tt.check(t, err)
			<-collect(ch) // ch is closed, or this blocks
		})
	}
}

func TestFollowStopsWhenNobodyReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	forever := func() (*buildv1.BuildEvent, error) { return vertexEvent("v"), nil }
	ch := make(chan *client.SolveStatus) // never read
	_, _, err := Follow(ctx, forever, ch, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if _, open := <-ch; open {
		t.Error("ch is still open")
	}
}

func dumpAll(ss []*client.SolveStatus) string {
	out := "["
	for _, s := range ss {
		out += dump(s)
	}
	return out + "]"
}
