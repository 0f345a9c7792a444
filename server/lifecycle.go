package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// run solves a build that has left the queue, records how it ended, and
// hands its slot to the next queued build.
func (s *Server) run(b *build) {
	defer s.builds.Done()
	defer func() {
		s.mu.Lock()
		s.running--
		if s.runningBy[b.tenant]--; s.runningBy[b.tenant] <= 0 {
			delete(s.runningBy, b.tenant)
		}
		delete(s.inflight, b.key)
		s.mu.Unlock()
		s.dispatch()
	}()
	ctx, cancel := b.context()
	defer cancel()
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, b.timeout, errTimeout{after: b.timeout})
	defer cancelTimeout()

	log := s.cfg.Logger.With("build", b.id)
	res, err := s.solve(ctx, b, b.commit)
	if err == nil {
		log.Info("build succeeded", "image", res.Image)
		b.succeed(res)
		return
	}
	if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
		err = cause
	}
	state, berr := endOfRun(err, b.log)
	log.Warn("build ended", "state", state.String(), "reason", berr.GetReason(), "step", berr.GetStep(), "err", berr.GetMessage())
	b.fail(state, berr)
}

// endOf says in which state, and with which error, a build that stopped
// with err ends before it ran (see endOfRun for one that ran).
func endOf(err error) (buildv1.BuildState, *buildv1.BuildError) {
	return endState(err), classify(err, nil)
}

// dequeue takes b out of the queue; s.mu is held. It reports whether b was
// queued.
func (s *Server) dequeue(b *build) bool {
	if !s.queue.remove(b) {
		return false
	}
	delete(s.inflight, b.key)
	return true
}

// finishQueued ends a build that never left the queue.
func (s *Server) finishQueued(b *build, cause error) {
	b.requestStop(cause)
	state, berr := endOf(cause)
	b.fail(state, berr)
	s.dispatch()
}

// persistLog stores a build's events as they come, in batches: whatever
// arrived while the last write ran goes in the next one, so a fast build
// never waits on the store. It also feeds the observer, in log order. When
// the log is complete and stored, the build leaves memory; from then on it
// is read from the store.
func (s *Server) persistLog(b *build) {
	defer s.persist.Done()
	ctx := context.Background()
	log := s.cfg.Logger.With("build", b.id)
	var seq uint64
	var stored recordKey // of the record as last put (the zero key: none yet)
	failed := false
	for {
		evs, closed, changed := b.log.since(seq)
		if len(evs) > 0 {
			if err := storeEvents(ctx, s.cfg.Store, b.id, evs); err != nil {
				// Nothing is skipped: the same events are written again
				// later. The build cannot go on without its log.
				log.Error("store events", "err", err, "events", len(evs), "from_seq", evs[0].GetSeq())
				if !failed {
					failed = true
					s.stopBuild(b, errHistoryWrite{err})
				}
				if closed && !s.storeRecovers(ctx, b, evs) {
					log.Error("giving up storing the build's log", "last_stored_seq", seq)
					s.mu.Lock()
					delete(s.active, b.id)
					s.mu.Unlock()
					return
				}
				select {
				case <-changed:
				case <-time.After(storeRetryPause):
				}
				continue
			}
			for _, e := range evs {
				s.cfg.Observer.Event(e)
			}
			seq = evs[len(evs)-1].GetSeq()
			// The store keeps LastSeq from the appended events: the
			// record (its request may be large) is written again only
			// when something else in it changed.
			if k := b.recordKey(); k != stored {
				info := b.info()
				info.LastSeq = seq
				if err := s.cfg.Store.PutBuild(ctx, info); err != nil {
					log.Error("store build", "err", err)
				} else {
					stored = k
				}
			}
			continue
		}
		if closed {
			s.mu.Lock()
			delete(s.active, b.id)
			s.mu.Unlock()
			s.sharedDone(b)
			return
		}
		<-changed
	}
}

// Retries of a failed history write: a store that fails for longer than
// storeRetryWindow fails the build; its log is still written when the
// store answers again, every storeRetryPause, until the build has ended
// and storeGiveUp more attempts have failed.
const (
	storeRetryWindow = 5 * time.Second
	storeRetryPause  = time.Second
	storeGiveUp      = 30
)

// storeEvents appends evs to the build's stored log, retrying with
// exponential backoff for up to storeRetryWindow.
func storeEvents(ctx context.Context, store history.Store, id string, evs []*buildv1.BuildEvent) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 50 * time.Millisecond
	bo.MaxInterval = time.Second
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, store.AppendEvents(ctx, id, evs)
	}, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(storeRetryWindow))
	return err
}

// storeRecovers tries, for an ended build, to write its last events a few
// more times; it reports whether that worked.
func (s *Server) storeRecovers(ctx context.Context, b *build, evs []*buildv1.BuildEvent) bool {
	for range storeGiveUp {
		time.Sleep(storeRetryPause)
		if s.cfg.Store.AppendEvents(ctx, b.id, evs) == nil {
			return true
		}
	}
	return false
}

// errHistoryWrite is a build stopped because its log could not be stored.
type errHistoryWrite struct{ err error }

func (e errHistoryWrite) Error() string {
	return "the server could not store the build's log, so it stopped the build: " + e.err.Error()
}

func (e errHistoryWrite) Unwrap() error { return e.err }

// GRPCStatus gives the error its code.
func (e errHistoryWrite) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// stopBuild stops b with cause: a queued build ends at once, a running one
// when its solve returns.
func (s *Server) stopBuild(b *build, cause error) {
	s.mu.Lock()
	queued := s.dequeue(b)
	s.mu.Unlock()
	if queued {
		s.finishQueued(b, cause)
		return
	}
	b.requestStop(cause)
}

// interruptLeftovers ends the builds a previous server process left queued
// or running: they are INTERRUPTED, with an error that says so, at the end
// of their stored log.
func (s *Server) interruptLeftovers(ctx context.Context) error {
	var open []*buildv1.BuildInfo
	f := history.Filter{Limit: 500, AnyTenant: true, States: []buildv1.BuildState{
		buildv1.BuildState_BUILD_STATE_QUEUED, buildv1.BuildState_BUILD_STATE_RESOLVING,
		buildv1.BuildState_BUILD_STATE_BUILDING, buildv1.BuildState_BUILD_STATE_PUSHING,
		buildv1.BuildState_BUILD_STATE_UNSPECIFIED,
	}}
	for {
		page, more, err := s.cfg.Store.List(ctx, f)
		if err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		open = append(open, page...)
		if !more {
			break
		}
		f.Before = page[len(page)-1].GetBuildId()
	}
	for _, info := range open {
		// Events may have been stored after the record was last written.
		last := info.GetLastSeq()
		for {
			evs, err := s.cfg.Store.Events(ctx, info.GetBuildId(), last, 1000)
			if err != nil {
				return fmt.Errorf("read history: %w", err)
			}
			if len(evs) == 0 {
				break
			}
			last = evs[len(evs)-1].GetSeq()
		}
		info.LastSeq = last
		if err := s.endRecord(ctx, info, buildv1.BuildState_BUILD_STATE_INTERRUPTED, errShutdown); err != nil {
			return err
		}
		s.cfg.Logger.Warn("build left running by a previous server marked interrupted", "build", info.GetBuildId())
	}
	return nil
}

// endRecord ends a stored build that no server runs, in state for cause:
// its log (after info.LastSeq) gets the state change and the error, its
// record the end.
func (s *Server) endRecord(ctx context.Context, info *buildv1.BuildInfo, state buildv1.BuildState, cause error) error {
	now := time.Now()
	_, berr := endOf(cause)
	last := info.GetLastSeq()
	evs := []*buildv1.BuildEvent{
		{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{
			State: state, Message: berr.Message, Commit: info.GetCommit(),
		}}},
		{Event: &buildv1.BuildEvent_Error{Error: berr}},
	}
	for i, e := range evs {
		e.BuildId, e.Seq, e.Time = info.GetBuildId(), last+uint64(i)+1, timestamp(now)
	}
	if err := s.cfg.Store.AppendEvents(ctx, info.GetBuildId(), evs); err != nil {
		return fmt.Errorf("end build %s: %w", info.GetBuildId(), err)
	}
	info.State, info.Error, info.EndTime, info.LastSeq, info.QueuePosition = state, berr, timestamp(now), last+2, 0
	if err := s.cfg.Store.PutBuild(ctx, info); err != nil {
		return fmt.Errorf("end build %s: %w", info.GetBuildId(), err)
	}
	for _, e := range evs {
		s.cfg.Observer.Event(e)
	}
	return nil
}

// shortCommit is a commit's first 12 hex digits, as the build graph names
// it.
func shortCommit(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
