package main

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// watcher is one WatchBuild stream and what it received.
type watcher struct {
	check  seqCheck
	opened time.Time // when WatchBuild was called
	ended  time.Time // when the stream ended
	// live holds the delivery latency (receive time minus the event's
	// server time) of each event recorded after the stream was opened;
	// replay that of the events recorded before, which the server sent
	// from its log as soon as the watcher attached.
	live, replay []time.Duration
	// bySeq holds every event's delivery latency in the order received
	// (index i is seq i+1 when the check passed).
	bySeq []time.Duration
	// events, when not nil, keeps what each event was (for the report's
	// slowest events); one watcher keeps it.
	events *[]eventInfo
	err    error
}

// watch follows build id from seq 0 until the stream ends and records
// every event.
func (w *watcher) watch(ctx context.Context, c buildv1.BuildClient, id string) {
	w.opened = time.Now()
	defer func() { w.ended = time.Now() }()
	stream, err := c.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id})
	if err != nil {
		w.err = err
		return
	}
	// Receive into one message: the loop does as little as it can, so
	// that what is measured is the server's delivery.
	var e buildv1.BuildEvent
	for {
		e.Reset()
		err := stream.RecvMsg(&e)
		now := time.Now()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			w.err = err
			return
		}
		w.record(&e, now)
	}
}

// record checks e's seq and keeps its delivery latency.
func (w *watcher) record(e *buildv1.BuildEvent, now time.Time) {
	w.check.observe(e.GetSeq())
	at := e.GetTime().AsTime()
	d := now.Sub(at)
	if at.Before(w.opened) {
		w.replay = append(w.replay, d)
	} else {
		w.live = append(w.live, d)
	}
	w.bySeq = append(w.bySeq, d)
	if w.events != nil {
		*w.events = append(*w.events, eventInfo{seq: e.GetSeq(), at: at, kind: kindOf(e), size: proto.Size(e)})
	}
}

// eventInfo is what one event was, for the report.
type eventInfo struct {
	seq  uint64
	at   time.Time // the server's time
	kind string
	size int // bytes, marshalled
}

// kindOf names e's kind of event.
func kindOf(e *buildv1.BuildEvent) string {
	switch e.GetEvent().(type) {
	case *buildv1.BuildEvent_State:
		return "state"
	case *buildv1.BuildEvent_Vertex:
		return "vertex"
	case *buildv1.BuildEvent_Status:
		return "status"
	case *buildv1.BuildEvent_Log:
		return "log"
	case *buildv1.BuildEvent_Warning:
		return "warning"
	case *buildv1.BuildEvent_Result:
		return "result"
	case *buildv1.BuildEvent_Error:
		return "error"
	}
	return "unknown"
}
