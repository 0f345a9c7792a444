package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func logEvent(i int) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte(fmt.Sprint(i))}}}
}

// A fast producer and slow readers: the producer never waits, and every
// reader sees every event exactly once, in order. The slow readers block on
// their first event until the producer has appended everything, so a
// producer that waited on its readers could never finish.
func TestEventLogSlowReaderLosesNothing(t *testing.T) {
	const n = 100_000
	l := newEventLog("b1", redactor{}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	produced := make(chan struct{})

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func(slow bool) {
			defer wg.Done()
			var next uint64 = 1
			err := l.follow(ctx, 0, func(e *buildv1.BuildEvent) error {
				if slow && next == 1 {
					<-produced
				}
				if e.Seq != next || string(e.GetLog().GetData()) != fmt.Sprint(next-1) || e.BuildId != "b1" {
					return fmt.Errorf("got seq %d data %q, want seq %d", e.Seq, e.GetLog().GetData(), next)
				}
				next++
				return nil
			})
			if err == nil && next != n+1 {
				err = fmt.Errorf("reader saw %d events, want %d", next-1, n)
			}
			errs <- err
		}(r > 0)
	}
	go func() {
		for i := 0; i < n; i++ {
			l.append(logEvent(i))
		}
		l.close()
		close(produced)
	}()
	select {
	case <-produced:
	case <-time.After(30 * time.Second):
		t.Fatal("the producer waited on its readers")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestEventLogReplayFromSeq(t *testing.T) {
	l := newEventLog("b1", redactor{}, 0)
	for i := 0; i < 10; i++ {
		l.append(logEvent(i))
	}
	l.close()
	l.append(logEvent(99)) // dropped: the log is closed
	var got []uint64
	if err := l.follow(context.Background(), 7, func(e *buildv1.BuildEvent) error {
		got = append(got, e.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[8 9 10]" {
		t.Errorf("replay from 7 = %v, want [8 9 10]", got)
	}
}

func TestEventLogFollowStopsWithContext(t *testing.T) {
	l := newEventLog("b1", redactor{}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.follow(ctx, 0, func(*buildv1.BuildEvent) error { return nil }) }()
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("follow = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not return after cancel")
	}
}

func TestRedactor(t *testing.T) {
	r := newRedactor([]string{"s3cret-pass", "abc"})
	evs := []*buildv1.BuildEvent{
		{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte("login with s3cret-pass now")}}},
		{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Message: "401: s3cret-pass"}}},
		{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Name: "x s3cret-pass", Error: "s3cret-pass"}}},
		{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{Short: "s3cret-pass", Detail: []string{"a s3cret-pass"}}}},
		{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{Message: "s3cret-pass abc"}}},
	}
	for _, e := range evs {
		r.event(e)
		if s := e.String(); strings.Contains(s, "s3cret-pass") {
			t.Errorf("secret left in %s", s)
		}
	}
	// Secrets shorter than 4 bytes are not masked: masking them would mangle
	// ordinary output.
	if got := evs[4].GetState().GetMessage(); got != "***** abc" {
		t.Errorf("state message = %q", got)
	}
}

func TestEventLogCapsOutput(t *testing.T) {
	l := newEventLog("b1", redactor{}, 10)
	for i := 0; i < 5; i++ {
		l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte("abcd")}}})
	}
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{}}})
	evs, _, _ := l.since(0)
	var kinds []string
	for _, e := range evs {
		switch {
		case e.GetLog() != nil:
			kinds = append(kinds, "log")
		case e.GetWarning() != nil:
			kinds = append(kinds, "warning")
		case e.GetState() != nil:
			kinds = append(kinds, "state")
		}
	}
	// Two chunks fit in 10 bytes; the third is dropped with one warning,
	// the rest silently; other events are kept.
	if fmt.Sprint(kinds) != "[log log warning state]" {
		t.Errorf("events = %v", kinds)
	}
	if last, dropped := l.stats(); last != 4 || dropped != 12 {
		t.Errorf("stats = %d, %d; want 4, 12", last, dropped)
	}
}

// Output up to exactly the cap is kept; an event's own time is kept.
func TestEventLogCapBoundaryAndTimes(t *testing.T) {
	l := newEventLog("b1", redactor{}, 8)
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte("abcd")}}})
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte("efgh")}}})
	began := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	l.append(&buildv1.BuildEvent{Time: timestamp(began), Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{}}})
	evs, _, _ := l.since(0)
	if len(evs) != 3 || evs[1].GetLog() == nil {
		t.Fatalf("events %v: want both chunks (8 bytes, the cap) and the state", evs)
	}
	if _, dropped := l.stats(); dropped != 0 {
		t.Errorf("dropped %d bytes at exactly the cap", dropped)
	}
	if got := evs[2].GetTime().AsTime(); !got.Equal(began) {
		t.Errorf("the state event's time became %v, want its own %v", got, began)
	}
	if evs[0].GetTime() == nil {
		t.Error("an event without a time was not stamped")
	}
}

// The git source's output (BuildKit's git plumbing) is kept only if the
// step fails, or the build ends while it runs.
func TestQuietGitSource(t *testing.T) {
	const plumbing = "fatal: Not a valid object name 0123^{commit}\n"
	logsOf := func(l *eventLog) (out string, seqs []uint64) {
		evs, _, _ := l.since(0)
		for _, e := range evs {
			if lg := e.GetLog(); lg != nil {
				out += string(lg.GetData())
				seqs = append(seqs, e.GetSeq())
			}
		}
		return out, seqs
	}
	ok := newEventLog("b", redactor{}, 0)
	ok.append(vertexEvent("g", "git https://git.example/a.git@0123456789ab", "", false))
	ok.append(chunk("g", 2, plumbing))
	ok.append(chunk("c", 1, "compiling\n"))
	ok.append(vertexEvent("g", "git https://git.example/a.git@0123456789ab", "", true))
	if out, _ := logsOf(ok); out != "compiling\n" {
		t.Errorf("a successful git step's output was kept: %q", out)
	}

	bad := newEventLog("b", redactor{}, 0)
	bad.append(vertexEvent("g", "git https://git.example/a.git@0123456789ab", "", false))
	bad.append(chunk("g", 2, plumbing))
	bad.append(vertexEvent("g", "git https://git.example/a.git@0123456789ab", "exit status 128", true))
	out, seqs := logsOf(bad)
	last, _ := bad.stats()
	if out != plumbing || len(seqs) != 1 || seqs[0] != last-1 {
		t.Errorf("a failed git step: output %q at %v, want it just before the completion (seq %d)", out, seqs, last)
	}

	cut := newEventLog("b", redactor{}, 0)
	cut.append(vertexEvent("g", "git https://git.example/a.git@0123456789ab", "", false))
	cut.append(chunk("g", 2, plumbing))
	cut.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_CANCELLED}}})
	if out, _ := logsOf(cut); out != plumbing {
		t.Errorf("a git step cut short by the build's end: output %q", out)
	}
}
