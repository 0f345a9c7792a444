package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// eventLog is one build's append-only, sequence-numbered event log. Every
// reader (the CreateImage stream, GetBuild, later watchers) reads from it.
// Appending never waits for a reader: readers wait on a channel that is
// closed, and replaced, on every append, then read what they missed.
//
// Secrets the build's redactor knows are masked in every event before it is
// stored; step output goes through a logMasker, so a secret split across
// chunks is masked too.
//
// Step output (log chunks) is capped: past logCap bytes it is dropped,
// counted, and a warning in the log says where the cap was reached. Every
// other event is always kept.
type eventLog struct {
	buildID string
	// base is the seq of the last event before this log's first: 0, or
	// the stored log's last for a build another server queued (its first
	// events are in the store only).
	base   uint64
	red    redactor
	now    func() time.Time
	logCap int64

	mu       sync.Mutex
	masker   *logMasker
	events   []*buildv1.BuildEvent
	closed   bool
	changed  chan struct{}
	logBytes int64
	dropped  int64
	// quiet holds the output of the git source's steps while they run:
	// git's plumbing, shown only if the step fails.
	quiet map[string][]*buildv1.BuildEvent
}

// quietPrefix starts the name of the build graph's git source (llb's
// custom name "git <repo>@<commit>"). Its output is BuildKit's git
// plumbing, noise on success (a harmless "fatal: Not a valid object name"
// included); it is kept only if the step fails.
const quietPrefix = "git "

// maxQuiet bounds the output held for one quiet step; past it the output
// is let through.
const maxQuiet = 64 << 10

func newEventLog(buildID string, red redactor, logCap int64) *eventLog {
	return &eventLog{buildID: buildID, red: red, now: time.Now, logCap: logCap,
		masker: newLogMasker(red), changed: make(chan struct{}), quiet: map[string][]*buildv1.BuildEvent{}}
}

// append masks secrets in e, stamps it with the build id, the next
// sequence number and, unless it already has one, the time, and adds it.
// Output held back because it may begin a secret is added before the
// step's completion and before any state change. Events appended after
// close are dropped: the log of an ended build never changes.
func (l *eventLog) append(e *buildv1.BuildEvent) {
	if e.GetLog() == nil {
		l.red.event(e)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	switch v := e.GetVertex(); {
	case e.GetLog() != nil:
		if e = l.masker.mask(e); e != nil {
			l.addOutput(e)
		}
		return
	case v.GetCompleted() != nil:
		for _, h := range l.masker.release(v.GetDigest()) {
			l.addOutput(h)
		}
		held, quiet := l.quiet[v.GetDigest()]
		delete(l.quiet, v.GetDigest())
		if quiet && v.GetError() != "" {
			for _, h := range held {
				l.addLog(h)
			}
		}
	case v != nil && strings.HasPrefix(v.GetName(), quietPrefix):
		if _, ok := l.quiet[v.GetDigest()]; !ok {
			l.quiet[v.GetDigest()] = nil
		}
	case e.GetState() != nil:
		for _, h := range l.masker.release("") {
			l.addOutput(h)
		}
		if ended(e.GetState().GetState()) {
			l.releaseQuiet()
		}
	}
	l.add(e)
}

// addOutput adds a masked log chunk, or holds it while its step is quiet;
// l.mu is held.
func (l *eventLog) addOutput(e *buildv1.BuildEvent) {
	d := e.GetLog().GetVertex()
	if held, ok := l.quiet[d]; ok {
		n := 0
		for _, h := range held {
			n += len(h.GetLog().GetData())
		}
		if n+len(e.GetLog().GetData()) <= maxQuiet {
			l.quiet[d] = append(held, e)
			return
		}
		delete(l.quiet, d) // too much to hold: show it all
		for _, h := range held {
			l.addLog(h)
		}
	}
	l.addLog(e)
}

// releaseQuiet adds the output of every quiet step that has not completed
// (the build ended while it ran: it did not succeed); l.mu is held.
func (l *eventLog) releaseQuiet() {
	digests := make([]string, 0, len(l.quiet))
	for d := range l.quiet {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		for _, h := range l.quiet[d] {
			l.addLog(h)
		}
		delete(l.quiet, d)
	}
}

// addLog adds a log chunk unless the log cap has been reached; l.mu is held.
func (l *eventLog) addLog(e *buildv1.BuildEvent) {
	lg := e.GetLog()
	if l.logCap > 0 {
		n := int64(len(lg.GetData()))
		if l.logBytes+n > l.logCap {
			if l.dropped == 0 {
				l.add(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
					Vertex: lg.GetVertex(),
					Short:  fmt.Sprintf("log output reached this server's cap of %d bytes; later output is left out", l.logCap),
				}}})
			}
			l.dropped += n
			return
		}
		l.logBytes += n
	}
	l.add(e)
}

// add stamps and stores e; l.mu is held.
func (l *eventLog) add(e *buildv1.BuildEvent) {
	e.BuildId = l.buildID
	e.Seq = l.base + uint64(len(l.events)) + 1
	if e.Time == nil {
		e.Time = timestamppb.New(l.now())
	}
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
}

// stats returns the last seq and the bytes of output dropped at the cap.
func (l *eventLog) stats() (lastSeq uint64, dropped int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base + uint64(len(l.events)), l.dropped
}

// close marks the log complete and wakes every reader.
func (l *eventLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.changed)
}

// since returns the events after sequence number seq, whether the log is
// complete, and a channel closed on the next change.
func (l *eventLog) since(seq uint64) ([]*buildv1.BuildEvent, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var evs []*buildv1.BuildEvent
	// Events up to base are not here: a reader from before it reads them
	// from the store first (Server.streamLog).
	seq = max(seq, l.base) - l.base
	if seq < uint64(len(l.events)) {
		evs = l.events[seq:len(l.events):len(l.events)]
	}
	return evs, l.closed, l.changed
}

// follow sends every event after sequence number from, in order, and then
// every new one as it is appended, until the log is complete, send fails or
// ctx ends.
func (l *eventLog) follow(ctx context.Context, from uint64, send func(*buildv1.BuildEvent) error) error {
	seq := from
	for {
		evs, closed, changed := l.since(seq)
		for _, e := range evs {
			if err := send(e); err != nil {
				return err
			}
			seq = e.Seq
		}
		if len(evs) > 0 {
			continue
		}
		if closed {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
