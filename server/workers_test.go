package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/buildkit/client"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/workers"
)

// poolOf is a checked pool of the fakes, named tcp://w<i>:1234, and the
// fakes in the rendezvous order of the test request's repository.
func poolOf(t *testing.T, fks ...*fakeBuildKit) (*workers.Pool[BuildKitClient], []*fakeBuildKit) {
	t.Helper()
	byAddr := map[string]*fakeBuildKit{}
	var es []buildkitd.Endpoint
	for i, fk := range fks {
		a := fmt.Sprintf("tcp://w%d:1234", i)
		byAddr[a] = fk
		es = append(es, buildkitd.Endpoint{Address: a})
	}
	p, err := workers.New(workers.Config[BuildKitClient]{
		Endpoints: es,
		Dial: func(_ context.Context, e buildkitd.Endpoint) (BuildKitClient, error) {
			return byAddr[e.Address], nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Check(context.Background())
	var ordered []*fakeBuildKit
	for _, name := range p.Order(imageRequest("v1").GetGitRepo()) {
		ordered = append(ordered, byAddr[name])
	}
	return p, ordered
}

func statesOf(evs []*buildv1.BuildEvent) []string {
	var out []string
	for _, e := range evs {
		if st := e.GetState(); st != nil {
			out = append(out, st.GetState().String()+" "+st.GetMessage())
		}
	}
	return out
}

// A build whose worker is lost before the push runs again on the next
// worker in its order, and says so; lost during the push, or twice, it
// fails with an error that names the builder.
func TestBuildRetriedOnAnotherWorker(t *testing.T) {
	lost := status.Error(codes.Unavailable, "error reading from server: EOF")
	tests := []struct {
		name      string
		fake      func(first, second *fakeBuildKit)
		wantState buildv1.BuildState
		wantOn    int // the worker (in order) the record names
		wantMsg   string
		building  int // BUILDING states
	}{
		{"lost before the push", func(first, _ *fakeBuildKit) {
			first.fail = func(string, int) error { return lost }
		}, buildv1.BuildState_BUILD_STATE_SUCCEEDED, 1, "", 2},
		{"unreachable once given", func(first, _ *fakeBuildKit) {
			first.listErr = lost
		}, buildv1.BuildState_BUILD_STATE_SUCCEEDED, 1, "", 2},
		{"lost while pushing", func(first, _ *fakeBuildKit) {
			first.pushErr = lost
		}, buildv1.BuildState_BUILD_STATE_FAILED, 0, "was lost while pushing the image", 1},
		{"lost twice", func(first, second *fakeBuildKit) {
			first.fail = func(string, int) error { return lost }
			second.fail = func(string, int) error { return lost }
		}, buildv1.BuildState_BUILD_STATE_FAILED, 1, "the second builder the build lost", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, ordered := poolOf(t, newFakeBuildKit(), newFakeBuildKit())
			tt.fake(ordered[0], ordered[1])
			names := pool.Order(imageRequest("v1").GetGitRepo())
			e := newLifecycleServer(t, newFakeBuildKit(), func(c *Config) {
				c.BuildKitClient = nil
				c.Builders = WorkerPool(pool)
			})
			id := e.start(t, imageRequest("v1")).GetBuildId()
			evs := e.watch(t, id)
			info := e.get(t, id)
			if info.GetState() != tt.wantState {
				t.Fatalf("state %v (%v), want %v", info.GetState(), info.GetError(), tt.wantState)
			}
			if info.GetBuilder() != names[tt.wantOn] {
				t.Errorf("record names builder %q, want %q", info.GetBuilder(), names[tt.wantOn])
			}
			states := statesOf(evs)
			building := 0
			for _, s := range states {
				if strings.HasPrefix(s, "BUILD_STATE_BUILDING building ") {
					if !strings.Contains(s, " on tcp://w") {
						t.Errorf("state %q does not name the worker", s)
					}
					building++
				}
			}
			if building != tt.building {
				t.Errorf("%d BUILDING states, want %d: %q", building, tt.building, states)
			}
			warned := false
			for _, ev := range evs {
				if strings.Contains(ev.GetWarning().GetShort(), "was lost before the push: running the build again") {
					warned = true
				}
			}
			if warned != (tt.building == 2) {
				t.Errorf("retry warning in the log: %v, want %v", warned, tt.building == 2)
			}
			if tt.wantMsg != "" {
				be := info.GetError()
				if !strings.Contains(be.GetMessage(), tt.wantMsg) || !strings.Contains(be.GetMessage(), "buildkitd tcp://w") ||
					be.GetReason() != reasonBuilderLost || codes.Code(be.GetCode()) != codes.Unavailable {
					t.Errorf("error %v, want reason %s, code Unavailable, a message naming the builder and %q", be, reasonBuilderLost, tt.wantMsg)
				}
			}
			// The builder is given back in the background.
			deadline := time.Now().Add(5 * time.Second)
			for _, s := range pool.Status() {
				for s.Running != 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
					s = statusOf(pool, s.Name)
				}
				if s.Running != 0 {
					t.Errorf("worker %s still counts %d builds", s.Name, s.Running)
				}
			}
		})
	}
}

func statusOf(p *workers.Pool[BuildKitClient], name string) workers.Status {
	for _, s := range p.Status() {
		if s.Name == name {
			return s
		}
	}
	return workers.Status{}
}

// downFake is a fake buildkitd that does not answer until up is set.
type downFake struct {
	*fakeBuildKit
	up atomic.Bool
}

func (d *downFake) ListWorkers(ctx context.Context, opts ...client.ListWorkersOption) ([]*client.WorkerInfo, error) {
	if !d.up.Load() {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return d.fakeBuildKit.ListWorkers(ctx, opts...)
}

// While no worker is healthy, a build waits (QUEUED, saying why) instead
// of failing, and runs once one is.
func TestBuildWaitsForAHealthyWorker(t *testing.T) {
	fk := &downFake{fakeBuildKit: newFakeBuildKit()}
	pool, err := workers.New(workers.Config[BuildKitClient]{
		Endpoints: []buildkitd.Endpoint{{Address: "tcp://w0:1234"}},
		Dial:      func(context.Context, buildkitd.Endpoint) (BuildKitClient, error) { return fk, nil },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	pool.Check(context.Background())
	if pool.Healthy() != 0 {
		t.Fatal("the worker that does not answer is healthy")
	}
	e := newLifecycleServer(t, newFakeBuildKit(), func(c *Config) {
		c.BuildKitClient = nil
		c.Builders = WorkerPool(pool)
	})
	id := e.start(t, imageRequest("v1")).GetBuildId()
	const waiting = "BUILD_STATE_QUEUED waiting for a builder: no buildkitd worker is healthy"
	deadline := time.Now().Add(5 * time.Second)
	for {
		b := e.s.activeBuild(id)
		if b == nil {
			t.Fatal("the build ended while no worker was healthy")
		}
		evs, _, _ := b.log.since(0)
		if slices.Contains(statesOf(evs), waiting) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event says the build waits for a builder: %q", statesOf(evs))
		}
		time.Sleep(time.Millisecond)
	}
	// The worker answers again: the waiting build gets it.
	fk.up.Store(true)
	pool.Check(context.Background())
	e.watch(t, id)
	if info := e.get(t, id); info.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED || info.GetBuilder() != "tcp://w0:1234" {
		t.Fatalf("state %v on %q (%v)", info.GetState(), info.GetBuilder(), info.GetError())
	}
}
