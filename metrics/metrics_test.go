package metrics

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	queued      = buildv1.BuildState_BUILD_STATE_QUEUED
	resolving   = buildv1.BuildState_BUILD_STATE_RESOLVING
	building    = buildv1.BuildState_BUILD_STATE_BUILDING
	pushing     = buildv1.BuildState_BUILD_STATE_PUSHING
	succeeded   = buildv1.BuildState_BUILD_STATE_SUCCEEDED
	failed      = buildv1.BuildState_BUILD_STATE_FAILED
	cancelled   = buildv1.BuildState_BUILD_STATE_CANCELLED
	interrupted = buildv1.BuildState_BUILD_STATE_INTERRUPTED
)

// ts is t0 plus sec seconds.
func ts(sec float64) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(sec * float64(time.Second))))
}

func stateEv(id string, sec float64, s buildv1.BuildState) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec),
		Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: s}}}
}

func queuedAt(id string, sec float64, pos int32) *buildv1.BuildEvent {
	e := stateEv(id, sec, queued)
	e.GetState().QueuePosition = pos
	return e
}

// vertexEv is a vertex that started at sec and, if done, completed at sec.
func vertexEv(id string, sec float64, dgst string, done, cached bool) *buildv1.BuildEvent {
	v := &buildv1.Vertex{Digest: dgst, Name: "step " + dgst, Started: ts(sec), Cached: cached}
	if done {
		v.Completed = ts(sec)
	}
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec), Event: &buildv1.BuildEvent_Vertex{Vertex: v}}
}

func statusEv(id string, sec float64, vtx, sid, name string, current, total int64, done bool) *buildv1.BuildEvent {
	st := &buildv1.VertexStatus{Id: sid, Vertex: vtx, Name: name, Current: current, Total: total,
		Timestamp: ts(sec), Started: ts(0)}
	if done {
		st.Completed = ts(sec)
	}
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec), Event: &buildv1.BuildEvent_Status{Status: st}}
}

func resultEv(id string, sec float64) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec),
		Event: &buildv1.BuildEvent_Result{Result: &buildv1.BuildResult{Image: "r/x@sha256:1"}}}
}

func errorEv(id string, sec float64, code int32) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec),
		Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: code, Message: "x"}}}
}

func logEv(id string, sec float64) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{BuildId: id, Time: ts(sec),
		Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: "v", Stream: 1, Data: []byte("hi\n")}}}
}

// feed numbers each build's events 1, 2, 3, ... as the event log does and
// hands them to m.
func feed(m *Metrics, evs ...*buildv1.BuildEvent) {
	seqs := map[string]uint64{}
	for _, e := range evs {
		seqs[e.BuildId]++
		e.Seq = seqs[e.BuildId]
		m.Event(e)
	}
}

func newMetrics(t *testing.T, opts ...Option) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// hist is a histogram's sample count and sum.
type hist struct {
	count uint64
	sum   float64
}

// snapshot is every metric of the package, read back from a registry.
type snapshot struct {
	builds    map[string]float64 // by final state
	durations map[string]hist    // by final state
	phases    map[string]hist    // by phase
	vertices  map[string]float64 // by cached
	pushed    float64
	joins     float64
	inFlight  float64
	queue     float64
}

func read(t *testing.T, g prometheus.Gatherer) snapshot {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{builds: map[string]float64{}, durations: map[string]hist{}, phases: map[string]hist{}, vertices: map[string]float64{}}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch mf.GetName() {
			case "buildsvc_builds_total":
				s.builds[label(mt, "state")] += mt.GetCounter().GetValue() // summed over reasons
			case "buildsvc_build_duration_seconds":
				s.durations[label(mt, "state")] = histOf(mt)
			case "buildsvc_build_phase_duration_seconds":
				s.phases[label(mt, "phase")] = histOf(mt)
			case "buildsvc_vertices_total":
				s.vertices[label(mt, "cached")] = mt.GetCounter().GetValue()
			case "buildsvc_pushed_bytes_total":
				s.pushed = mt.GetCounter().GetValue()
			case "buildsvc_dedup_joins_total":
				s.joins = mt.GetCounter().GetValue()
			case "buildsvc_builds_in_flight":
				s.inFlight = mt.GetGauge().GetValue()
			case "buildsvc_queue_depth":
				s.queue = mt.GetGauge().GetValue()
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func histOf(m *dto.Metric) hist {
	return hist{count: m.GetHistogram().GetSampleCount(), sum: m.GetHistogram().GetSampleSum()}
}

var (
	finalNames = []string{"succeeded", "failed", "cancelled", "interrupted"}
	phaseNames = []string{"queued", "resolving", "building", "pushing"}
)

// checkCounts compares got with want, where a state, phase or cached value
// missing from want means 0.
func checkCounts(t *testing.T, got snapshot, want snapshot) {
	t.Helper()
	for _, s := range finalNames {
		if got.builds[s] != want.builds[s] {
			t.Errorf("builds_total{state=%q} = %v, want %v", s, got.builds[s], want.builds[s])
		}
		if got.durations[s] != want.durations[s] {
			t.Errorf("build_duration_seconds{state=%q} = %+v, want %+v", s, got.durations[s], want.durations[s])
		}
	}
	for _, p := range phaseNames {
		if got.phases[p] != want.phases[p] {
			t.Errorf("build_phase_duration_seconds{phase=%q} = %+v, want %+v", p, got.phases[p], want.phases[p])
		}
	}
	for _, c := range []string{"true", "false"} {
		if got.vertices[c] != want.vertices[c] {
			t.Errorf("vertices_total{cached=%q} = %v, want %v", c, got.vertices[c], want.vertices[c])
		}
	}
	if got.pushed != want.pushed {
		t.Errorf("pushed_bytes_total = %v, want %v", got.pushed, want.pushed)
	}
	if got.joins != want.joins {
		t.Errorf("dedup_joins_total = %v, want %v", got.joins, want.joins)
	}
	if got.inFlight != want.inFlight || got.queue != want.queue {
		t.Errorf("builds_in_flight, queue_depth = %v, %v, want %v, %v", got.inFlight, got.queue, want.inFlight, want.queue)
	}
}

func TestEvents(t *testing.T) {
	tests := []struct {
		name string
		evs  []*buildv1.BuildEvent
		want snapshot
	}{{
		name: "success with cached and uncached vertices",
		evs: []*buildv1.BuildEvent{
			queuedAt("a", 0, 2),
			queuedAt("a", 1, 1), // a new queue position: still queued
			queuedAt("a", 2, 0),
			stateEv("a", 3, building),
			vertexEv("a", 3, "sha256:git", false, false),
			vertexEv("a", 4, "sha256:git", true, false),
			vertexEv("a", 4, "sha256:git", true, false), // sent again: counted once
			vertexEv("a", 4, "sha256:base", true, true),
			vertexEv("a", 5, "sha256:mod", true, true),
			vertexEv("a", 6, "sha256:build", false, false),
			logEv("a", 7),
			vertexEv("a", 9, "sha256:build", true, false),
			stateEv("a", 10, pushing),
			stateEv("a", 12.5, succeeded),
			resultEv("a", 12.5),
		},
		want: snapshot{
			builds:    map[string]float64{"succeeded": 1},
			durations: map[string]hist{"succeeded": {1, 12.5}},
			phases:    map[string]hist{"queued": {1, 3}, "building": {1, 7}, "pushing": {1, 2.5}},
			vertices:  map[string]float64{"true": 2, "false": 2},
		},
	}, {
		// BuildKit v0.34 reports an image it already has as completed and
		// then, in a later event, as cached: the later word counts.
		name: "completed first, cached later",
		evs: []*buildv1.BuildEvent{
			queuedAt("l", 0, 0),
			stateEv("l", 1, building),
			vertexEv("l", 2, "sha256:image", true, false),
			vertexEv("l", 2, "sha256:image", true, true),
			vertexEv("l", 3, "sha256:build", true, false),
			stateEv("l", 4, succeeded),
		},
		want: snapshot{
			builds:    map[string]float64{"succeeded": 1},
			durations: map[string]hist{"succeeded": {1, 4}},
			phases:    map[string]hist{"queued": {1, 1}, "building": {1, 3}},
			vertices:  map[string]float64{"true": 1, "false": 1},
		},
	}, {
		name: "failure straight from queued",
		evs: []*buildv1.BuildEvent{
			queuedAt("f", 0, 0),
			stateEv("f", 5, failed),
			errorEv("f", 5, 14),
		},
		want: snapshot{
			builds:    map[string]float64{"failed": 1},
			durations: map[string]hist{"failed": {1, 5}},
			phases:    map[string]hist{"queued": {1, 5}},
		},
	}, {
		name: "cancel while building",
		evs: []*buildv1.BuildEvent{
			queuedAt("c", 0, 0),
			stateEv("c", 0.5, building),
			vertexEv("c", 1, "sha256:git", true, true),
			vertexEv("c", 1, "sha256:build", false, false), // never completes
			stateEv("c", 4, cancelled),
			errorEv("c", 4, 1),
		},
		want: snapshot{
			builds:    map[string]float64{"cancelled": 1},
			durations: map[string]hist{"cancelled": {1, 4}},
			phases:    map[string]hist{"queued": {1, 0.5}, "building": {1, 3.5}},
			vertices:  map[string]float64{"true": 1},
		},
	}, {
		name: "resolving, then queued",
		evs: []*buildv1.BuildEvent{
			stateEv("r", 0, resolving),
			queuedAt("r", 1, 0),
			stateEv("r", 3, building),
			stateEv("r", 6, pushing),
			stateEv("r", 10, succeeded),
			resultEv("r", 10),
		},
		want: snapshot{
			builds:    map[string]float64{"succeeded": 1},
			durations: map[string]hist{"succeeded": {1, 10}},
			phases:    map[string]hist{"resolving": {1, 1}, "queued": {1, 2}, "building": {1, 3}, "pushing": {1, 4}},
		},
	}, {
		name: "two concurrent builds, interleaved",
		evs: []*buildv1.BuildEvent{
			queuedAt("x", 0, 0),
			queuedAt("y", 1, 1),
			stateEv("x", 2, building),
			vertexEv("x", 3, "sha256:same", true, false),
			vertexEv("y", 3, "sha256:same", true, true), // same digest, other build: counted again
			queuedAt("y", 4, 0),
			stateEv("y", 5, building),
			stateEv("x", 6, pushing),
			stateEv("y", 7, failed),
			errorEv("y", 7, 2),
			stateEv("x", 8, succeeded),
			resultEv("x", 8),
		},
		want: snapshot{
			builds:    map[string]float64{"succeeded": 1, "failed": 1},
			durations: map[string]hist{"succeeded": {1, 8}, "failed": {1, 6}},
			phases:    map[string]hist{"queued": {2, 2 + 4}, "building": {2, 4 + 2}, "pushing": {1, 2}},
			vertices:  map[string]float64{"true": 1, "false": 1},
		},
	}, {
		name: "push with byte statuses",
		evs: []*buildv1.BuildEvent{
			queuedAt("p", 0, 0),
			stateEv("p", 1, building),
			// Pull progress of a base layer: not a push.
			statusEv("p", 1, "sha256:base", "sha256:l1", "", 500, 500, true),
			// A local transfer: not a push.
			statusEv("p", 1, "sha256:ctx", "context", "transferring", 70, 0, true),
			stateEv("p", 2, pushing),
			statusEv("p", 2, "sha256:export", "pushing layer sha256:l2", "", 40, 100, false), // running: not yet
			statusEv("p", 3, "sha256:export", "pushing layer sha256:l2", "", 100, 100, true),
			statusEv("p", 3, "sha256:export", "pushing layer sha256:l2", "", 100, 100, true), // again: once
			statusEv("p", 3, "sha256:export", "sha256:l3", "pushing", 0, 30, true),           // by name; total when current is 0
			// What BuildKit v0.34.2 sends: no byte counters, so nothing.
			statusEv("p", 3, "sha256:export", "pushing layers", "", 0, 0, true),
			statusEv("p", 4, "sha256:export", "pushing manifest for r/x:1@sha256:1", "", 0, 0, true),
			stateEv("p", 4, succeeded),
			resultEv("p", 4),
		},
		want: snapshot{
			builds:    map[string]float64{"succeeded": 1},
			durations: map[string]hist{"succeeded": {1, 4}},
			phases:    map[string]hist{"queued": {1, 1}, "building": {1, 1}, "pushing": {1, 2}},
			pushed:    130,
		},
	}, {
		name: "interrupted build never seen before counts without duration",
		evs: []*buildv1.BuildEvent{
			stateEv("old", 100, interrupted),
			errorEv("old", 100, 14),
		},
		want: snapshot{builds: map[string]float64{"interrupted": 1}},
	}, {
		name: "interrupted while building",
		evs: []*buildv1.BuildEvent{
			queuedAt("i", 0, 0),
			stateEv("i", 1, building),
			stateEv("i", 61, interrupted),
			errorEv("i", 61, 14),
		},
		want: snapshot{
			builds:    map[string]float64{"interrupted": 1},
			durations: map[string]hist{"interrupted": {1, 61}},
			phases:    map[string]hist{"queued": {1, 1}, "building": {1, 60}},
		},
	}, {
		name: "progress of an unknown or ended build is ignored",
		evs: []*buildv1.BuildEvent{
			vertexEv("ghost", 0, "sha256:a", true, true),
			statusEv("ghost", 0, "sha256:e", "pushing layer sha256:a", "", 9, 9, true),
			queuedAt("e", 0, 0),
			stateEv("e", 1, failed),
			errorEv("e", 1, 2),
			vertexEv("e", 2, "sha256:late", true, false),
		},
		want: snapshot{
			builds:    map[string]float64{"failed": 1},
			durations: map[string]hist{"failed": {1, 1}},
			phases:    map[string]hist{"queued": {1, 1}},
		},
	}, {
		name: "unspecified state and nil event are ignored",
		evs: []*buildv1.BuildEvent{
			stateEv("u", 0, buildv1.BuildState_BUILD_STATE_UNSPECIFIED),
			{BuildId: "u"},
		},
		want: snapshot{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			feed(m, tt.evs...)
			m.Event(nil)
			checkCounts(t, read(t, reg), tt.want)
			if len(m.tracked) != 0 || m.order.Len() != 0 {
				t.Errorf("%d builds still tracked after every build ended", len(m.tracked))
			}
		})
	}
}

// TestGauges follows the in-flight and queue-depth gauges step by step.
func TestGauges(t *testing.T) {
	m, reg := newMetrics(t)
	steps := []struct {
		ev              *buildv1.BuildEvent
		inFlight, queue float64
	}{
		{stateEv("a", 0, resolving), 0, 0},
		{queuedAt("a", 1, 0), 0, 1},
		{queuedAt("b", 1, 1), 0, 2},
		{queuedAt("c", 1, 2), 0, 3},
		{queuedAt("b", 2, 0), 0, 3},
		{stateEv("a", 2, building), 1, 2},
		{stateEv("b", 3, building), 2, 1},
		{stateEv("a", 4, pushing), 2, 1},
		{stateEv("c", 5, cancelled), 2, 1}, // queued until its error ends it
		{errorEv("c", 5, 1), 2, 0},
		{stateEv("a", 6, succeeded), 1, 0},
		{resultEv("a", 6), 1, 0},
		{stateEv("b", 7, failed), 1, 0},
		{errorEv("b", 7, 2), 0, 0},
	}
	for i, s := range steps {
		m.Event(s.ev)
		got := read(t, reg)
		if got.inFlight != s.inFlight || got.queue != s.queue {
			t.Errorf("after step %d (%s %v): in flight %v, queue %v; want %v, %v",
				i, s.ev.GetBuildId(), s.ev.GetState().GetState(), got.inFlight, got.queue, s.inFlight, s.queue)
		}
	}
}

func TestMaxTrackedBuilds(t *testing.T) {
	m, reg := newMetrics(t, WithMaxTrackedBuilds(2))
	feed(m, queuedAt("a", 0, 0), stateEv("a", 1, building), queuedAt("b", 2, 0), queuedAt("c", 3, 1))
	got := read(t, reg)
	// a, the oldest, was dropped to make room for c.
	if got.inFlight != 0 || got.queue != 2 || len(m.tracked) != 2 {
		t.Fatalf("in flight %v, queue %v, tracked %d; want 0, 2, 2", got.inFlight, got.queue, len(m.tracked))
	}
	if _, ok := m.tracked["a"]; ok {
		t.Fatal("oldest build still tracked")
	}
	// a's end still counts, without a duration.
	feed(m, stateEv("a", 9, succeeded))
	checkCounts(t, read(t, reg), snapshot{
		builds: map[string]float64{"succeeded": 1},
		phases: map[string]hist{"queued": {1, 1}},
		queue:  2,
	})
}

func TestJoined(t *testing.T) {
	m, reg := newMetrics(t)
	m.Joined("a")
	m.Joined("a")
	m.Joined("b")
	if got := read(t, reg).joins; got != 3 {
		t.Fatalf("dedup_joins_total = %v, want 3", got)
	}
}

func TestCleanupRan(t *testing.T) {
	m, reg := newMetrics(t)
	m.CleanupRan(1000, 3, 20)
	m.CleanupRan(0, 0, 0)
	m.CleanupRan(-5, -1, 5) // negative values count as 0
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			if w := label(mt, "what"); w != "" {
				key += "{" + w + "}"
			}
			got[key] = mt.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"buildsvc_cleanup_runs_total":                  3,
		"buildsvc_cleanup_freed_bytes_total{buildkit}": 1000,
		"buildsvc_cleanup_freed_bytes_total{temp}":     25,
		"buildsvc_cleanup_builds_deleted_total":        3,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// TestConcurrent runs many builds at once, each from its own goroutine, while
// scrapes read the metrics. Run with -race.
func TestConcurrent(t *testing.T) {
	m, reg := newMetrics(t)
	const builds = 64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var scrapes sync.WaitGroup
	scrapes.Add(1)
	go func() {
		defer scrapes.Done()
		for {
			select {
			case <-stop:
				return
			default:
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for i := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("b%d", i)
			evs := []*buildv1.BuildEvent{queuedAt(id, 0, int32(i)), stateEv(id, 1, building)}
			for v := range 10 {
				evs = append(evs, vertexEv(id, 2, fmt.Sprintf("sha256:%d", v), true, v%2 == 0))
			}
			evs = append(evs, stateEv(id, 3, pushing),
				statusEv(id, 4, "sha256:export", "pushing layer sha256:x", "", 10, 10, true))
			final := []buildv1.BuildState{succeeded, failed}[i%2]
			evs = append(evs, stateEv(id, 5, final))
			if final == failed {
				evs = append(evs, errorEv(id, 5, 2))
			}
			m.Joined(id)
			feed(m, evs...)
		}()
	}
	wg.Wait()
	close(stop)
	scrapes.Wait()
	checkCounts(t, read(t, reg), snapshot{
		builds:    map[string]float64{"succeeded": builds / 2, "failed": builds / 2},
		durations: map[string]hist{"succeeded": {builds / 2, 5 * builds / 2}, "failed": {builds / 2, 5 * builds / 2}},
		phases:    map[string]hist{"queued": {builds, builds}, "building": {builds, 2 * builds}, "pushing": {builds, 2 * builds}},
		vertices:  map[string]float64{"true": 5 * builds, "false": 5 * builds},
		pushed:    10 * builds,
		joins:     builds,
	})
	if len(m.tracked) != 0 {
		t.Errorf("%d builds still tracked", len(m.tracked))
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name string
		reg  prometheus.Registerer
		opts []Option
		err  string
	}{
		{"nil registerer", nil, nil, "registerer is nil"},
		{"nil disk usage", prometheus.NewRegistry(), []Option{WithDiskUsage(nil)}, "disk usage function is nil"},
		{"zero timeout", prometheus.NewRegistry(), []Option{WithDiskUsageTimeout(0)}, "not positive"},
		{"zero max tracked", prometheus.NewRegistry(), []Option{WithMaxTrackedBuilds(0)}, "not positive"},
		{"defaults", prometheus.NewRegistry(), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.reg, tt.opts...)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestNewTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg); err == nil {
		t.Fatal("second New on the same registry: no error")
	}
}

// TestSeriesExistBeforeFirstBuild checks that every labelled series reads 0
// from the start, so rate() and ratios work from the first scrape.
func TestSeriesExistBeforeFirstBuild(t *testing.T) {
	_, reg := newMetrics(t)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var ls []string
			for _, l := range mt.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got = append(got, mf.GetName()+"{"+strings.Join(ls, ",")+"}")
		}
	}
	sort.Strings(got)
	want := []string{
		"buildsvc_build_cache_bytes_total{direction=read}",
		"buildsvc_build_cache_bytes_total{direction=written}",
		"buildsvc_build_cache_puts_total{}",
		"buildsvc_build_cache_requests_total{result=hit}",
		"buildsvc_build_cache_requests_total{result=miss}",
		"buildsvc_build_cache_store_bytes{}",
		"buildsvc_build_duration_seconds{state=cancelled}",
		"buildsvc_build_duration_seconds{state=failed}",
		"buildsvc_build_duration_seconds{state=interrupted}",
		"buildsvc_build_duration_seconds{state=succeeded}",
		"buildsvc_build_phase_duration_seconds{phase=building}",
		"buildsvc_build_phase_duration_seconds{phase=pushing}",
		"buildsvc_build_phase_duration_seconds{phase=queued}",
		"buildsvc_build_phase_duration_seconds{phase=resolving}",
		"buildsvc_builds_in_flight{}",
		"buildsvc_builds_total{reason=,state=succeeded}",
		"buildsvc_builds_total{reason=BASE_NOT_FOUND,state=failed}",
		"buildsvc_builds_total{reason=BUILDER_LOST,state=failed}",
		"buildsvc_builds_total{reason=BUILDER_UNAVAILABLE,state=failed}",
		"buildsvc_builds_total{reason=CANCELLED,state=cancelled}",
		"buildsvc_builds_total{reason=COMPILE_ERROR,state=failed}",
		"buildsvc_builds_total{reason=DOWNLOAD_ERROR,state=failed}",
		"buildsvc_builds_total{reason=GIT_AUTH,state=failed}",
		"buildsvc_builds_total{reason=GIT_NOT_FOUND,state=failed}",
		"buildsvc_builds_total{reason=GIT_UNAVAILABLE,state=failed}",
		"buildsvc_builds_total{reason=HISTORY_UNAVAILABLE,state=failed}",
		"buildsvc_builds_total{reason=INTERNAL,state=failed}",
		"buildsvc_builds_total{reason=INTERRUPTED,state=interrupted}",
		"buildsvc_builds_total{reason=PUSH_FAILED,state=failed}",
		"buildsvc_builds_total{reason=REGISTRY_AUTH,state=failed}",
		"buildsvc_builds_total{reason=REGISTRY_UNAVAILABLE,state=failed}",
		"buildsvc_builds_total{reason=TIMEOUT,state=failed}",
		"buildsvc_cleanup_builds_deleted_total{}",
		"buildsvc_cleanup_freed_bytes_total{what=build-cache}",
		"buildsvc_cleanup_freed_bytes_total{what=buildkit}",
		"buildsvc_cleanup_freed_bytes_total{what=module-proxy}",
		"buildsvc_cleanup_freed_bytes_total{what=temp}",
		"buildsvc_cleanup_runs_total{}",
		"buildsvc_dedup_joins_total{}",
		"buildsvc_pushed_bytes_total{}",
		"buildsvc_queue_depth{}",
		"buildsvc_vertices_total{cached=false}",
		"buildsvc_vertices_total{cached=true}",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A scrape is one consistent view of the builds: taken while a build ends,
// it shows the build either still in flight and not yet counted, or counted
// and no longer in flight, never both or neither. (Prometheus collects the
// collectors of one scrape concurrently, so without care the gauge and the
// counter can be read on either side of the build's end.)
func TestScrapeIsConsistent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	value := func(mfs []*dto.MetricFamily, name string) float64 {
		var sum float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, mt := range mf.GetMetric() {
				sum += mt.GetCounter().GetValue() + mt.GetGauge().GetValue() + float64(mt.GetHistogram().GetSampleCount())
			}
		}
		return sum
	}
	for i := range 2000 {
		id := fmt.Sprintf("b%d", i)
		m.Event(stateEv(id, 0, building))
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Event(stateEv(id, 1, failed))
			m.Event(errorEv(id, 1, 2))
		}()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		<-done
		total, inFlight := value(mfs, "buildsvc_builds_total"), value(mfs, "buildsvc_builds_in_flight")
		phases, durations := value(mfs, "buildsvc_build_phase_duration_seconds"), value(mfs, "buildsvc_build_duration_seconds")
		ended := float64(i + 1)
		if total+inFlight != ended || phases != total || durations != total {
			t.Fatalf("scrape during the end of build %d: builds_total %v, in flight %v, phases %v, durations %v; want total+in flight = %v and phases = durations = total",
				i+1, total, inFlight, phases, durations, ended)
		}
	}
}

// TestCacheUsage counts the build-cache store's use from result events and
// the stores' cleanups.
func TestCacheUsage(t *testing.T) {
	m, reg := newMetrics(t)
	result := func(u *buildv1.CacheUsage) *buildv1.BuildEvent {
		return &buildv1.BuildEvent{BuildId: "b", Event: &buildv1.BuildEvent_Result{Result: &buildv1.BuildResult{CacheUsage: u}}}
	}
	m.Event(result(&buildv1.CacheUsage{BuildCacheHits: 7, BuildCacheMisses: 2, BuildCachePuts: 2, BuildCacheBytesRead: 700, BuildCacheBytesWritten: 30}))
	m.Event(result(&buildv1.CacheUsage{BuildCacheHits: 1}))
	m.Event(result(nil)) // a server without the stores
	m.StoresCleaned(100, 40)
	m.BuildCacheStoreSize(4096)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range []string{"what", "result", "direction"} {
				if w := label(mt, l); w != "" {
					key += "{" + w + "}"
				}
			}
			got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"buildsvc_build_cache_store_bytes":                 4096,
		"buildsvc_build_cache_requests_total{hit}":         8,
		"buildsvc_build_cache_requests_total{miss}":        2,
		"buildsvc_build_cache_bytes_total{read}":           700,
		"buildsvc_build_cache_bytes_total{written}":        30,
		"buildsvc_build_cache_puts_total":                  2,
		"buildsvc_cleanup_freed_bytes_total{module-proxy}": 100,
		"buildsvc_cleanup_freed_bytes_total{build-cache}":  40,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// The worker pool's and the shared queue's series, from the functions
// given; a queue that does not answer reports down.
func TestWorkersAndSharedQueue(t *testing.T) {
	workers := []Worker{{Name: "tcp://a:1234", Healthy: true, Running: 2, Builds: 7, DiskBytes: 100}, {Name: "tcp://b:1234"}}
	down := false
	_, reg := newMetrics(t, WithWorkers(func() []Worker { return workers }), WithSharedQueue(func(context.Context) (int, int, error) {
		if down {
			return 0, 0, errors.New("no database")
		}
		return 3, 4, nil
	}))
	got := map[string]float64{}
	gather := func() {
		clear(got)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	gather()
	for key, want := range map[string]float64{
		"buildsvc_worker_up,worker=tcp://a:1234": 1, "buildsvc_worker_up,worker=tcp://b:1234": 0,
		"buildsvc_worker_builds_running,worker=tcp://a:1234": 2, "buildsvc_worker_builds_total,worker=tcp://a:1234": 7,
		"buildsvc_worker_disk_usage_bytes,worker=tcp://a:1234": 100,
		"buildsvc_shared_queue_builds,state=queued":            3, "buildsvc_shared_queue_builds,state=running": 4, "buildsvc_shared_queue_up": 1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	down = true
	gather()
	if got["buildsvc_shared_queue_up"] != 0 {
		t.Errorf("a queue that does not answer: up %v", got["buildsvc_shared_queue_up"])
	}
	if _, ok := got["buildsvc_shared_queue_builds,state=queued"]; ok {
		t.Error("a queue that does not answer still reports counts")
	}
}
