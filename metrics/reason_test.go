package metrics

import (
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func reasonEv(id string, sec float64, reason string) *buildv1.BuildEvent {
	e := errorEv(id, sec, 2)
	e.GetError().Reason = reason
	return e
}

// buildsvc_builds_total is labelled with the reason of a build's error,
// empty for a build that succeeded; the build is counted when its error
// event comes, after its final state, and stays in its phase until then.
func TestBuildsByReason(t *testing.T) {
	m, reg := newMetrics(t)
	feed(m,
		queuedAt("ok", 0, 0), stateEv("ok", 1, building), stateEv("ok", 2, pushing), stateEv("ok", 3, succeeded), resultEv("ok", 3),
		queuedAt("cc", 0, 1), stateEv("cc", 1, building), stateEv("cc", 4, failed),
	)
	if got := read(t, reg); got.builds["failed"] != 0 || got.inFlight != 1 {
		t.Errorf("before its error event the failed build is counted %v times, %v in flight; want 0 and 1", got.builds["failed"], got.inFlight)
	}
	feed(m,
		reasonEv("cc", 4, "COMPILE_ERROR"),
		queuedAt("c2", 0, 0), stateEv("c2", 1, building), stateEv("c2", 2, failed), reasonEv("c2", 2, "COMPILE_ERROR"),
		queuedAt("to", 0, 0), stateEv("to", 1, building), stateEv("to", 9, failed), reasonEv("to", 9, "TIMEOUT"),
		queuedAt("x", 0, 0), stateEv("x", 1, cancelled), reasonEv("x", 1, "CANCELLED"),
		// Not a reason: counted as INTERNAL, so the label's values stay few.
		queuedAt("odd", 0, 0), stateEv("odd", 1, failed), reasonEv("odd", 1, "no such {thing}"),
		queuedAt("none", 0, 0), stateEv("none", 1, failed), reasonEv("none", 1, ""),
		// An error of a build whose end was not seen counts nothing.
		reasonEv("ghost", 1, "COMPILE_ERROR"),
		// One a previous server left, seen only as it is interrupted.
		stateEv("old", 5, interrupted), reasonEv("old", 5, "INTERRUPTED"),
	)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "buildsvc_builds_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if v := mt.GetCounter().GetValue(); v != 0 {
				got[label(mt, "state")+"/"+label(mt, "reason")] = v
			}
		}
	}
	want := map[string]float64{
		"succeeded/":              1,
		"failed/COMPILE_ERROR":    2,
		"failed/TIMEOUT":          1,
		"failed/INTERNAL":         2,
		"cancelled/CANCELLED":     1,
		"interrupted/INTERRUPTED": 1,
	}
	if len(got) != len(want) {
		t.Errorf("builds_total = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("builds_total{%s} = %v, want %v", k, got[k], v)
		}
	}
	s := read(t, reg)
	if s.inFlight != 0 || s.queue != 0 || len(m.tracked) != 0 {
		t.Errorf("after every build ended: %v in flight, %v queued, %d tracked; want none", s.inFlight, s.queue, len(m.tracked))
	}
	if d := s.durations["failed"]; d.count != 5 || d.sum != 4+2+9+1+1 {
		t.Errorf("failed durations %+v, want 5 observations, each from the build's first state event to its final one", d)
	}
}
