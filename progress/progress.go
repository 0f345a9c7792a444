// Package progress maps BuildKit's progress stream onto the build.v1 API and
// back.
//
// The server turns each *client.SolveStatus it receives from a solve into
// BuildEvents with FromSolveStatus and appends them to the build's event log.
// A client turns the progress events it reads back into SolveStatus values
// with ToSolveStatus (or Follow, which does that for a whole stream) and feeds
// them to BuildKit's progressui, so users see the display they already know
// while the API itself never carries a BuildKit type. A BuildKit upgrade that
// changes its progress types changes this package, not the clients.
//
// A Reattacher keeps a client's view of a build whole when its stream breaks:
// it resumes with WatchBuild from the last seq it saw, so the reader sees
// every event exactly once.
//
// What the API has no field for is dropped on the way in: a vertex's progress
// group and a warning's source info and ranges. Text that BuildKit carries as
// bytes (warning summaries and details) becomes a string, with invalid UTF-8
// replaced by U+FFFD, because proto3 strings must be valid UTF-8; log data stays
// bytes and crosses unchanged.
package progress

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// FromSolveStatus maps one BuildKit progress update onto build events: one
// event for each vertex, then each status, each log chunk and each warning,
// in that order and in the order BuildKit gave them. Only the event's payload
// is set; the build id, sequence number and time are the event log's to fill.
// Nil entries are skipped; a nil status gives no events.
func FromSolveStatus(s *client.SolveStatus) []*buildv1.BuildEvent {
	if s == nil {
		return nil
	}
	n := len(s.Vertexes) + len(s.Statuses) + len(s.Logs) + len(s.Warnings)
	if n == 0 {
		return nil
	}
	events := make([]*buildv1.BuildEvent, 0, n)
	for _, v := range s.Vertexes {
		if v == nil {
			continue
		}
		events = append(events, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{
			Digest:    v.Digest.String(),
			Inputs:    digestsToStrings(v.Inputs),
			Name:      validString(v.Name),
			Started:   fromTimePtr(v.Started),
			Completed: fromTimePtr(v.Completed),
			Cached:    v.Cached,
			Error:     validString(v.Error),
		}}})
	}
	for _, st := range s.Statuses {
		if st == nil {
			continue
		}
		events = append(events, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Status{Status: &buildv1.VertexStatus{
			Id:        validString(st.ID),
			Vertex:    st.Vertex.String(),
			Name:      validString(st.Name),
			Current:   st.Current,
			Total:     st.Total,
			Timestamp: fromTime(st.Timestamp),
			Started:   fromTimePtr(st.Started),
			Completed: fromTimePtr(st.Completed),
		}}})
	}
	for _, l := range s.Logs {
		if l == nil {
			continue
		}
		events = append(events, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{
			Vertex:    l.Vertex.String(),
			Stream:    int32(l.Stream),
			Data:      l.Data,
			Timestamp: fromTime(l.Timestamp),
		}}})
	}
	for _, w := range s.Warnings {
		if w == nil {
			continue
		}
		events = append(events, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
			Vertex: w.Vertex.String(),
			Level:  int64(w.Level),
			Short:  validString(string(w.Short)),
			Detail: bytesToStrings(w.Detail),
			Url:    validString(w.URL),
		}}})
	}
	return events
}

// ToSolveStatus maps a progress event (vertex, status, log or warning) back
// onto a BuildKit progress update holding that one entry, for
// progressui.Display.UpdateFrom. It returns nil for every other event (state,
// result, error), for a nil event and for a progress event without a payload.
func ToSolveStatus(e *buildv1.BuildEvent) *client.SolveStatus {
	switch ev := e.GetEvent().(type) {
	case *buildv1.BuildEvent_Vertex:
		v := ev.Vertex
		if v == nil {
			return nil
		}
		return &client.SolveStatus{Vertexes: []*client.Vertex{{
			Digest:    digest.Digest(v.GetDigest()),
			Inputs:    stringsToDigests(v.GetInputs()),
			Name:      v.GetName(),
			Started:   toTimePtr(v.GetStarted()),
			Completed: toTimePtr(v.GetCompleted()),
			Cached:    v.GetCached(),
			Error:     v.GetError(),
		}}}
	case *buildv1.BuildEvent_Status:
		st := ev.Status
		if st == nil {
			return nil
		}
		return &client.SolveStatus{Statuses: []*client.VertexStatus{{
			ID:        st.GetId(),
			Vertex:    digest.Digest(st.GetVertex()),
			Name:      st.GetName(),
			Total:     st.GetTotal(),
			Current:   st.GetCurrent(),
			Timestamp: toTime(st.GetTimestamp()),
			Started:   toTimePtr(st.GetStarted()),
			Completed: toTimePtr(st.GetCompleted()),
		}}}
	case *buildv1.BuildEvent_Log:
		l := ev.Log
		if l == nil {
			return nil
		}
		return &client.SolveStatus{Logs: []*client.VertexLog{{
			Vertex:    digest.Digest(l.GetVertex()),
			Stream:    int(l.GetStream()),
			Data:      l.GetData(),
			Timestamp: toTime(l.GetTimestamp()),
		}}}
	case *buildv1.BuildEvent_Warning:
		w := ev.Warning
		if w == nil {
			return nil
		}
		return &client.SolveStatus{Warnings: []*client.VertexWarning{{
			Vertex: digest.Digest(w.GetVertex()),
			Level:  int(w.GetLevel()),
			Short:  stringToBytes(w.GetShort()),
			Detail: stringsToBytes(w.GetDetail()),
			URL:    w.GetUrl(),
		}}}
	default:
		return nil
	}
}

// fromTimePtr maps an unset time (nil) to an unset timestamp (nil).
func fromTimePtr(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// fromTime maps the zero time to an unset timestamp.
func fromTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func toTimePtr(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// toTime maps an unset timestamp to the zero time.
func toTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func digestsToStrings(ds []digest.Digest) []string {
	if len(ds) == 0 {
		return nil
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func stringsToDigests(ss []string) []digest.Digest {
	if len(ss) == 0 {
		return nil
	}
	out := make([]digest.Digest, len(ss))
	for i, s := range ss {
		out[i] = digest.Digest(s)
	}
	return out
}

func bytesToStrings(bs [][]byte) []string {
	if len(bs) == 0 {
		return nil
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = validString(string(b))
	}
	return out
}

func stringsToBytes(ss []string) [][]byte {
	if len(ss) == 0 {
		return nil
	}
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// stringToBytes keeps an empty string an unset (nil) byte slice.
func stringToBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// validString makes s fit a proto3 string field, which must be valid UTF-8
// or the event cannot be marshalled.
func validString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}
