package progress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Recv reads the next event of a build's event stream, as the Recv method of
// a CreateImage or WatchBuild stream does: it returns io.EOF once the server
// ended the stream.
type Recv func() (*buildv1.BuildEvent, error)

// WatchFunc opens a stream of the events of build buildID whose seq is
// greater than fromSeq, as the WatchBuild call does.
type WatchFunc func(ctx context.Context, buildID string, fromSeq uint64) (Recv, error)

// Backoff says how a Reattacher waits between attempts to resume a broken
// stream: Initial before the first, doubling up to Max, and giving up once
// GiveUp has passed without progress.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	GiveUp  time.Duration
}

// DefaultBackoff rides out a server restart or a network blip and gives up
// after two minutes.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, GiveUp: 2 * time.Minute}

// Attempt describes an attempt to resume a broken stream that is about to be
// made, for a notice to the user.
type Attempt struct {
	// BuildID is the build whose stream broke.
	BuildID string
	// FromSeq is the seq of the last event seen; the new stream starts after it.
	FromSeq uint64
	// N counts the attempts since the stream broke: 1, 2, ...
	N int
	// Wait is how long the Reattacher waits before the attempt.
	Wait time.Duration
	// Err is why the stream, or the previous attempt, failed.
	Err error
}

// ReattachOptions configure a Reattacher. The zero value is ready to use.
type ReattachOptions struct {
	// Backoff paces the attempts; a zero field takes DefaultBackoff's value.
	Backoff Backoff
	// Notify, if not nil, is called before each attempt, on the goroutine
	// that called Recv.
	Notify func(Attempt)
}

// ReattachError is returned by Reattacher.Recv when a stream broke and could
// not be resumed: the attempts failed with an error that is not transient, or
// kept failing until the backoff gave up. It wraps the last attempt's error.
type ReattachError struct {
	BuildID string
	// FromSeq is the seq of the last event seen.
	FromSeq uint64
	// Attempts made since the stream broke.
	Attempts int
	// GaveUp is set when the attempts failed with transient errors for
	// longer than the backoff allows.
	GaveUp bool
	Err    error
}

func (e *ReattachError) Error() string {
	if e.GaveUp {
		return fmt.Sprintf("reattach to build %s after event %d: gave up after %d attempts: %v", e.BuildID, e.FromSeq, e.Attempts, e.Err)
	}
	return fmt.Sprintf("reattach to build %s after event %d: %v", e.BuildID, e.FromSeq, e.Err)
}

func (e *ReattachError) Unwrap() error { return e.Err }

// Reattacher reads a build's events from a stream and, when the stream breaks
// with a transient error (see Transient), opens a new one with WatchFunc from
// the last seq it has seen, so that its reader sees every event of the build
// exactly once and in order. Events the new stream repeats (seq at or below
// the last one seen) are dropped.
//
// Nothing is resumed before the first event has arrived: until then the
// build id may be unknown (a CreateImage stream names its build only in its
// events), and an error that early more likely means the server cannot be
// reached at all, which the caller should report at once.
//
// The backoff starts over, and the give-up clock with it, when an event
// arrives or when a resumed stream stayed up longer than Backoff.Max before
// it broke: a stream can be silent for long while a step runs.
//
// A Reattacher is for one goroutine.
type Reattacher struct {
	watch   WatchFunc
	backoff Backoff
	notify  func(Attempt)

	recv     Recv // nil while the stream is broken
	openedAt time.Time
	buildID  string
	lastSeq  uint64
	seen     bool // an event has arrived

	// Since the stream broke: how many attempts, when it broke, and the
	// last error.
	attempts int
	brokeAt  time.Time
	lastErr  error
}

// NewReattacher reads the events of first, and resumes it with watch when it
// breaks. buildID may be empty when the caller does not know it yet; the
// Reattacher learns it from the first event.
func NewReattacher(buildID string, first Recv, watch WatchFunc, opts ReattachOptions) *Reattacher {
	b := opts.Backoff
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.GiveUp <= 0 {
		b.GiveUp = DefaultBackoff.GiveUp
	}
	return &Reattacher{watch: watch, backoff: b, notify: opts.Notify, recv: first, buildID: buildID, openedAt: time.Now()}
}

// BuildID returns the id of the build being read, or "" until it is known.
func (r *Reattacher) BuildID() string { return r.buildID }

// LastSeq returns the seq of the last event Recv returned.
func (r *Reattacher) LastSeq() uint64 { return r.lastSeq }

// Recv returns the build's next event, resuming the stream as needed. It
// returns io.EOF when the server ended the stream, ctx's cause when ctx ends
// during a wait, a *ReattachError when the stream could not be resumed, and
// any other error of the stream as it is.
func (r *Reattacher) Recv(ctx context.Context) (*buildv1.BuildEvent, error) {
	for {
		if r.recv == nil {
			if err := r.reopen(ctx); err != nil {
				return nil, err
			}
		}
		e, err := r.recv()
		switch {
		case err == nil:
			if e.GetSeq() != 0 && e.GetSeq() <= r.lastSeq {
				continue // already seen, before the stream broke
			}
			r.accept(e)
			return e, nil
		case errors.Is(err, io.EOF), !r.seen, !Transient(err):
			if r.attempts > 0 && !errors.Is(err, io.EOF) {
				return nil, r.reattachError(err, false)
			}
			return nil, err
		}
		r.broke(err)
	}
}

// accept records e as seen and ends any outage.
func (r *Reattacher) accept(e *buildv1.BuildEvent) {
	if r.buildID == "" {
		r.buildID = e.GetBuildId()
	}
	if e.GetSeq() != 0 {
		r.lastSeq = e.GetSeq()
	}
	r.seen = true
	r.attempts = 0
}

// broke records that the current stream failed with the transient err.
func (r *Reattacher) broke(err error) {
	r.recv = nil
	now := time.Now()
	if r.attempts == 0 || now.Sub(r.openedAt) > r.backoff.Max {
		// A new outage: the stream was healthy until now.
		r.attempts, r.brokeAt = 0, now
	}
	r.lastErr = err
}

// reopen waits out the backoff and opens a new stream from the last seq,
// until an attempt succeeds, fails with an error that is not transient, or
// the backoff gives up.
func (r *Reattacher) reopen(ctx context.Context) error {
	for {
		wait := r.wait()
		if time.Since(r.brokeAt)+wait > r.backoff.GiveUp {
			return r.reattachError(r.lastErr, true)
		}
		r.attempts++
		if r.notify != nil {
			r.notify(Attempt{BuildID: r.buildID, FromSeq: r.lastSeq, N: r.attempts, Wait: wait, Err: r.lastErr})
		}
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("reattach to build %s: %w", r.buildID, err)
		}
		r.openedAt = time.Now()
		recv, err := r.watch(ctx, r.buildID, r.lastSeq)
		switch {
		case err == nil:
			r.recv = recv
			return nil
		case !Transient(err):
			return r.reattachError(err, false)
		}
		r.lastErr = err
	}
}

// sleep waits for d, or until ctx ends and returns its cause.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// wait is how long to wait before the next attempt: Initial, doubled for
// every attempt made since the stream broke, at most Max.
func (r *Reattacher) wait() time.Duration {
	w := r.backoff.Initial
	for i := 0; i < r.attempts && w < r.backoff.Max; i++ {
		w *= 2
	}
	return min(w, r.backoff.Max)
}

func (r *Reattacher) reattachError(err error, gaveUp bool) error {
	return &ReattachError{BuildID: r.buildID, FromSeq: r.lastSeq, Attempts: r.attempts, GaveUp: gaveUp, Err: err}
}

// Transient reports whether err, from a stream of build events, says that
// the connection to the server broke rather than that the server refused or
// failed the call: UNAVAILABLE (the server is down, restarting or
// unreachable, or the connection dropped), an HTTP/2 stream reset or a stream
// closed without its trailers (both INTERNAL in gRPC, but the transport's
// doing, not the server's), and an unexpected EOF or connection reset from
// below gRPC. Every other error, such as NOT_FOUND for an unknown build, is
// not transient: trying again would fail the same way.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable:
		return true
	case codes.Internal:
		msg := st.Message()
		return strings.Contains(msg, "stream terminated by RST_STREAM") || strings.Contains(msg, "closed the stream without sending trailers")
	}
	return false
}
