package metrics

import (
	"regexp"
	"strings"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Event records one event of a build's log. Events of one build must come in
// log order; events of different builds may come from any goroutine. Log,
// warning events are not measured, result events only for their cache
// usage; an error event ends a build
// that did not succeed (see stateChanged). e is not modified.
func (m *Metrics) Event(e *buildv1.BuildEvent) {
	if e == nil {
		return
	}
	var at time.Time
	if ts := e.GetTime(); ts != nil {
		at = ts.AsTime()
	}
	switch ev := e.GetEvent().(type) {
	case *buildv1.BuildEvent_State:
		m.stateChanged(e.GetBuildId(), ev.State.GetState(), at)
	case *buildv1.BuildEvent_Error:
		m.failed(e.GetBuildId(), ev.Error.GetReason())
	case *buildv1.BuildEvent_Vertex:
		m.vertex(e.GetBuildId(), ev.Vertex)
	case *buildv1.BuildEvent_Status:
		m.status(e.GetBuildId(), ev.Status)
	case *buildv1.BuildEvent_Result:
		m.cacheUsed(ev.Result.GetCacheUsage())
	}
}

// stateChanged follows a build into state at time at. A build that
// succeeded ends here. One that failed, was cancelled or interrupted ends
// with its error, the event after its final state, which carries the
// reason buildsvc_builds_total is labelled with: until then it stays in
// its phase (in flight or queued), so that a scrape sees it either there
// or counted, never neither.
func (m *Metrics) stateChanged(id string, state buildv1.BuildState, at time.Time) {
	_, isPhase := phases[state]
	_, isFinal := finals[state]
	if !isPhase && !isFinal {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.tracked[id]
	switch {
	case state == buildv1.BuildState_BUILD_STATE_SUCCEEDED:
		m.end(id, b, state, at, "")
		return
	case isFinal:
		if b == nil {
			// A build this Metrics has not seen run (one a previous
			// server left): counted, without a duration.
			b = m.track(id, time.Time{})
		}
		b.ending, b.endAt = state, at
		return
	}
	if b == nil {
		b = m.track(id, at)
	}
	if b.state == state {
		return // QUEUED again with a new queue position: same phase
	}
	m.leavePhase(b, at)
	m.inState[state]++
	b.state, b.since = state, at
}

// failed ends build id, whose final state event came before, with the
// reason of its error. An error of a build whose final state this Metrics
// did not see is ignored.
func (m *Metrics) failed(id, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.tracked[id]
	if b == nil || b.ending == buildv1.BuildState_BUILD_STATE_UNSPECIFIED {
		return
	}
	if !reasonRE.MatchString(reason) {
		reason = otherReason
	}
	m.end(id, b, b.ending, b.endAt, reason)
}

// end counts build id, tracked as b (nil if it is not), as ended in state
// at time at with reason, and forgets it; m.mu is held.
func (m *Metrics) end(id string, b *tracked, state buildv1.BuildState, at time.Time, reason string) {
	m.builds.WithLabelValues(finals[state], reason).Inc()
	if b == nil {
		return
	}
	m.leavePhase(b, at)
	if d, ok := elapsed(b.first, at); ok {
		m.buildDuration[state].Observe(d)
	}
	m.countVertices(b)
	m.forget(b)
}

// reasonRE matches a BuildError reason (UPPER_SNAKE_CASE); anything else
// is counted as otherReason, so that the label's values stay few.
var reasonRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// otherReason labels the end of a build whose error has no reason, or one
// that is not a reason.
const otherReason = "INTERNAL"

// leavePhase observes the time b spent in its current phase, up to at, and
// takes b out of the state counts.
func (m *Metrics) leavePhase(b *tracked, at time.Time) {
	if b.state == buildv1.BuildState_BUILD_STATE_UNSPECIFIED {
		return
	}
	if d, ok := elapsed(b.since, at); ok {
		m.phaseDuration[b.state].Observe(d)
	}
	m.inState[b.state]--
}

// track starts a record for build id, first seen at, dropping the oldest
// record if there are too many.
func (m *Metrics) track(id string, at time.Time) *tracked {
	for len(m.tracked) >= m.maxTracked {
		oldest := m.order.Front().Value.(*tracked)
		if oldest.state != buildv1.BuildState_BUILD_STATE_UNSPECIFIED {
			m.inState[oldest.state]--
		}
		m.forget(oldest)
	}
	b := &tracked{id: id, first: at}
	b.elem = m.order.PushBack(b)
	m.tracked[id] = b
	return b
}

func (m *Metrics) forget(b *tracked) {
	m.order.Remove(b.elem)
	delete(m.tracked, b.id)
}

// countLocked returns how many tracked builds are in one of states; m.mu
// is held.
func (m *Metrics) countLocked(states ...buildv1.BuildState) float64 {
	n := 0
	for _, s := range states {
		n += m.inState[s]
	}
	return float64(n)
}

// vertex notes a completed build step. BuildKit may report a step
// completed and then, in a later event, cached (an image it already had), so
// steps are counted when the build ends, each digest once, cached if any
// event said so.
func (m *Metrics) vertex(id string, v *buildv1.Vertex) {
	if v.GetCompleted() == nil || v.GetDigest() == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.tracked[id]
	if b == nil {
		return
	}
	if b.vertices == nil {
		b.vertices = map[string]bool{}
	}
	b.vertices[v.GetDigest()] = b.vertices[v.GetDigest()] || v.GetCached()
}

// countVertices adds a finished build's steps to buildsvc_vertices_total.
func (m *Metrics) countVertices(b *tracked) {
	for _, cached := range b.vertices {
		if cached {
			m.vertexCached.Inc()
		} else {
			m.vertexBuilt.Inc()
		}
	}
}

// status counts the bytes of a completed push status once; see the package
// documentation for what counts as one.
func (m *Metrics) status(id string, st *buildv1.VertexStatus) {
	if st.GetCompleted() == nil || !isPush(st) {
		return
	}
	n := st.GetCurrent()
	if n <= 0 {
		n = st.GetTotal()
	}
	if n <= 0 {
		return
	}
	key := st.GetVertex() + "\x00" + st.GetId()
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.tracked[id]
	if b == nil {
		return
	}
	if _, seen := b.pushes[key]; seen {
		return
	}
	if b.pushes == nil {
		b.pushes = map[string]struct{}{}
	}
	b.pushes[key] = struct{}{}
	m.pushedBytes.Add(float64(n))
}

func isPush(st *buildv1.VertexStatus) bool {
	return strings.HasPrefix(st.GetId(), "pushing") || strings.HasPrefix(st.GetName(), "pushing")
}

// elapsed returns the seconds from start to end, 0 if end is before start,
// and false if either time is unknown.
func elapsed(start, end time.Time) (float64, bool) {
	if start.IsZero() || end.IsZero() {
		return 0, false
	}
	return max(end.Sub(start).Seconds(), 0), true
}
