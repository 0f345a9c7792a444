package server

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var fixedTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func chunk(vertex string, stream int32, data string) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: vertex, Stream: stream, Data: []byte(data)}}}
}

// output is the text of every log chunk in evs for vertex and stream, in order.
func output(evs []*buildv1.BuildEvent, vertex string, stream int32) string {
	var b strings.Builder
	for _, e := range evs {
		if lg := e.GetLog(); lg != nil && lg.GetVertex() == vertex && lg.GetStream() == stream {
			b.Write(lg.GetData())
		}
	}
	return b.String()
}

// A secret is masked however the output around it is cut into chunks: at
// every byte, in two chunks or one byte a chunk.
func TestEventLogMasksSecretsAcrossChunks(t *testing.T) {
	const secret = "hunter2-s3cret-pass"
	text := "login: user\npassword: " + secret + "\nand again " + secret + secret + " done h"
	want := strings.ReplaceAll(text, secret, mask)
	cuts := map[string][][]int{}
	for i := 1; i < len(text); i++ {
		cuts["two chunks"] = append(cuts["two chunks"], []int{i})
	}
	var every []int
	for i := 1; i < len(text); i++ {
		every = append(every, i)
	}
	cuts["one byte a chunk"] = [][]int{every}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var c []int
		for i := 1; i < len(text); i++ {
			if rng.IntN(5) == 0 {
				c = append(c, i)
			}
		}
		cuts["random"] = append(cuts["random"], c)
	}
	for name, all := range cuts {
		t.Run(name, func(t *testing.T) {
			for _, cut := range all {
				l := newEventLog("b1", newRedactor([]string{secret}), 0)
				prev := 0
				for _, at := range append(cut, len(text)) {
					l.append(chunk("v1", 2, text[prev:at]))
					prev = at
				}
				l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_FAILED}}})
				evs, _, _ := l.since(0)
				if got := output(evs, "v1", 2); got != want {
					t.Fatalf("cut at %v: output %q, want %q", cut, got, want)
				}
				for _, e := range evs {
					if strings.Contains(string(e.GetLog().GetData()), secret[:len(secret)/2]) {
						t.Fatalf("cut at %v: a chunk holds half the secret: %q", cut, e.GetLog().GetData())
					}
				}
			}
		})
	}
}

// Held output is let out when its step completes or the build changes
// state, before that event, and streams are held apart.
func TestEventLogReleasesHeldOutput(t *testing.T) {
	const secret = "s3cret-pass"
	tests := []struct {
		name  string
		then  *buildv1.BuildEvent
		kinds string // of the events after the two let-out chunks
	}{
		{"step completes", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: "v1", Completed: timestamp(fixedTime)}}}, "log log vertex"},
		{"other step completes", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: "v2", Completed: timestamp(fixedTime)}}}, "vertex"},
		{"step progresses", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: "v1"}}}, "vertex"},
		{"state changes", &buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{}}}, "log log state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newEventLog("b1", newRedactor([]string{secret}), 0)
			l.append(chunk("v1", 1, "out: s3cr"))
			l.append(chunk("v1", 2, "err: s3c"))
			l.append(tt.then)
			evs, _, _ := l.since(0)
			var kinds []string
			for _, e := range evs[2:] {
				switch {
				case e.GetLog() != nil:
					kinds = append(kinds, "log")
				case e.GetVertex() != nil:
					kinds = append(kinds, "vertex")
				case e.GetState() != nil:
					kinds = append(kinds, "state")
				}
			}
			if got := strings.Join(kinds, " "); got != tt.kinds {
				t.Errorf("events after the first chunks = %q, want %q", got, tt.kinds)
			}
			if got := output(evs, "v1", 1); tt.kinds != "vertex" && got != "out: s3cr" {
				t.Errorf("stdout = %q", got)
			}
			if got := output(evs, "v1", 2); tt.kinds != "vertex" && got != "err: s3c" {
				t.Errorf("stderr = %q", got)
			}
			for i, e := range evs {
				if e.Seq != uint64(i+1) {
					t.Errorf("event %d has seq %d", i, e.Seq)
				}
			}
		})
	}
}

// Output with nothing that could begin a secret is never held.
func TestEventLogHoldsOnlyWhatMayBeginASecret(t *testing.T) {
	l := newEventLog("b1", newRedactor([]string{"s3cret-pass"}), 0)
	l.append(chunk("v1", 1, "plain output\n"))
	l.append(chunk("v1", 1, "ends in s"))
	evs, _, _ := l.since(0)
	if got := output(evs, "v1", 1); got != "plain output\nends in " {
		t.Errorf("output = %q", got)
	}
	// No secrets: nothing held at all.
	l = newEventLog("b1", newRedactor(nil), 0)
	l.append(chunk("v1", 1, "ends in s"))
	if evs, _, _ := l.since(0); output(evs, "v1", 1) != "ends in s" {
		t.Errorf("output without secrets = %q", output(evs, "v1", 1))
	}
}

// Secrets of minSecretLen bytes are masked, shorter ones are not.
func TestRedactorMinimumLength(t *testing.T) {
	r := newRedactor([]string{"abcd", "xyz"})
	if got := r.string("abcd xyz"); got != mask+" xyz" {
		t.Errorf("masked %q", got)
	}
}

// Every event the log takes is masked, not only step output, and the log
// adds no empty chunks.
func TestEventLogMasksEveryEvent(t *testing.T) {
	const secret = "s3cret-pass"
	l := newEventLog("b1", newRedactor([]string{secret}), 0)
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{Message: "login " + secret}}})
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: "v1", Name: "run " + secret, Error: secret}}})
	l.append(chunk("v1", 1, "plain\n"))
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{Short: secret, Detail: []string{secret}}}})
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Message: "401 " + secret}}})
	l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_FAILED}}})
	evs, _, _ := l.since(0)
	if len(evs) != 6 {
		t.Errorf("%d events, want 6: %v", len(evs), evs)
	}
	for _, e := range evs {
		if strings.Contains(e.String(), secret) {
			t.Errorf("secret left in %v", e)
		}
		if lg := e.GetLog(); lg != nil && len(lg.GetData()) == 0 {
			t.Errorf("empty log chunk %v", e)
		}
	}
}
