package progress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var (
	errUnavailable = status.Error(codes.Unavailable, "connection reset")
	fastBackoff    = Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, GiveUp: time.Second}
)

// logSeq is a log event of build b1 at seq, whose data names the seq.
func logSeq(seq uint64) *buildv1.BuildEvent {
	e := logEvent(fmt.Sprintf("line %d\n", seq))
	e.BuildId, e.Seq = "b1", seq
	return e
}

// logRange is the log events from seq first to last.
func logRange(first, last uint64) []*buildv1.BuildEvent {
	var evs []*buildv1.BuildEvent
	for s := first; s <= last; s++ {
		evs = append(evs, logSeq(s))
	}
	return evs
}

// watcher is a scripted WatchFunc: each call gives the next of its streams,
// and records what it was asked for.
type watcher struct {
	streams []func() (*buildv1.BuildEvent, error)
	openErr []error // the error of each call's open, if any
	calls   []string
}

func (w *watcher) watch(_ context.Context, id string, from uint64) (Recv, error) {
	n := len(w.calls)
	w.calls = append(w.calls, fmt.Sprintf("%s@%d", id, from))
	if n < len(w.openErr) && w.openErr[n] != nil {
		return nil, w.openErr[n]
	}
	if n >= len(w.streams) {
		return nil, errors.New("watcher: no more streams")
	}
	return w.streams[n], nil
}

// readAll reads r until an error, and returns the seqs it read.
func readAll(r *Reattacher) ([]uint64, error) {
	var seqs []uint64
	for {
		e, err := r.Recv(context.Background())
		if err != nil {
			return seqs, err
		}
		seqs = append(seqs, e.GetSeq())
	}
}

func seqs(first, last uint64) []uint64 {
	var out []uint64
	for s := first; s <= last; s++ {
		out = append(out, s)
	}
	return out
}

func TestReattachResumesFromLastSeq(t *testing.T) {
	w := &watcher{streams: []func() (*buildv1.BuildEvent, error){
		// The server repeats events 2 and 3: they must be dropped.
		events(errUnavailable, logRange(2, 6)...),
		events(io.EOF, logRange(5, 9)...),
	}}
	var notices []Attempt
	r := NewReattacher("", events(errUnavailable, logRange(1, 3)...), w.watch, ReattachOptions{
		Backoff: fastBackoff,
		Notify:  func(a Attempt) { notices = append(notices, a) },
	})
	got, err := readAll(r)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	if want := seqs(1, 9); !reflect.DeepEqual(got, want) {
		t.Errorf("seqs = %v, want %v", got, want)
	}
	if want := []string{"b1@3", "b1@6"}; !reflect.DeepEqual(w.calls, want) {
		t.Errorf("watch calls = %v, want %v", w.calls, want)
	}
	if len(notices) != 2 || notices[0].FromSeq != 3 || notices[0].N != 1 || notices[1].FromSeq != 6 || notices[1].N != 1 {
		t.Errorf("notices = %+v, want one attempt from 3, then one from 6", notices)
	}
	if !errors.Is(notices[0].Err, errUnavailable) || notices[0].BuildID != "b1" {
		t.Errorf("notice = %+v, want build b1 and the stream's error", notices[0])
	}
	if r.BuildID() != "b1" || r.LastSeq() != 9 {
		t.Errorf("BuildID, LastSeq = %q, %d; want b1, 9", r.BuildID(), r.LastSeq())
	}
}

func TestReattachRetriesTransientOpenErrors(t *testing.T) {
	w := &watcher{
		openErr: []error{errUnavailable, status.Error(codes.Unavailable, "connection refused"), nil},
		streams: []func() (*buildv1.BuildEvent, error){nil, nil, events(io.EOF, logRange(3, 4)...)},
	}
	var waits []time.Duration
	r := NewReattacher("b1", events(errUnavailable, logRange(1, 2)...), w.watch, ReattachOptions{
		Backoff: fastBackoff,
		Notify:  func(a Attempt) { waits = append(waits, a.Wait) },
	})
	got, err := readAll(r)
	if !errors.Is(err, io.EOF) || !reflect.DeepEqual(got, seqs(1, 4)) {
		t.Fatalf("seqs %v, err %v; want 1..4 and io.EOF", got, err)
	}
	if want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}; !reflect.DeepEqual(waits, want) {
		t.Errorf("waits = %v, want %v", waits, want)
	}
}

func TestReattachNotBeforeTheFirstEvent(t *testing.T) {
	w := &watcher{}
	r := NewReattacher("", events(errUnavailable), w.watch, ReattachOptions{Backoff: fastBackoff})
	_, err := r.Recv(context.Background())
	var re *ReattachError
	if !errors.Is(err, errUnavailable) || errors.As(err, &re) {
		t.Errorf("err = %v, want the stream's own error", err)
	}
	if len(w.calls) != 0 {
		t.Errorf("watch was called: %v", w.calls)
	}
}

func TestReattachStopsOnPermanentErrors(t *testing.T) {
	notFound := status.Error(codes.NotFound, "build b1 not found")
	tests := []struct {
		name string
		w    *watcher
	}{
		{name: "open fails", w: &watcher{openErr: []error{notFound}}},
		{name: "stream fails", w: &watcher{streams: []func() (*buildv1.BuildEvent, error){events(notFound)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReattacher("", events(errUnavailable, logSeq(1)), tt.w.watch, ReattachOptions{Backoff: fastBackoff})
			_, err := readAll(r)
			var re *ReattachError
			if !errors.As(err, &re) || re.GaveUp || re.BuildID != "b1" || re.FromSeq != 1 {
				t.Fatalf("err = %#v, want a *ReattachError for b1 from 1 that did not give up", err)
			}
			if status.Code(err) != codes.NotFound {
				t.Errorf("code = %v, want NotFound kept", status.Code(err))
			}
			if len(tt.w.calls) != 1 {
				t.Errorf("watch calls = %v, want one", tt.w.calls)
			}
		})
	}
}

func TestReattachStreamErrorAfterProgressIsReturnedAsIs(t *testing.T) {
	boom := status.Error(codes.Internal, "store broken")
	r := NewReattacher("", events(boom, logSeq(1)), (&watcher{}).watch, ReattachOptions{Backoff: fastBackoff})
	_, err := readAll(r)
	var re *ReattachError
	if !errors.Is(err, boom) || errors.As(err, &re) {
		t.Errorf("err = %v, want the stream's own error", err)
	}
}

func TestReattachGivesUp(t *testing.T) {
	w := &watcher{}
	for range 100 {
		w.openErr = append(w.openErr, errUnavailable)
	}
	b := Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, GiveUp: 20 * time.Millisecond}
	start := time.Now()
	r := NewReattacher("", events(errUnavailable, logSeq(1)), w.watch, ReattachOptions{Backoff: b})
	_, err := readAll(r)
	var re *ReattachError
	if !errors.As(err, &re) || !re.GaveUp || !errors.Is(err, errUnavailable) {
		t.Fatalf("err = %v, want a *ReattachError that gave up on Unavailable", err)
	}
	if re.Attempts < 3 || re.Attempts != len(w.calls) {
		t.Errorf("attempts = %d, watch calls = %d; want several, equal", re.Attempts, len(w.calls))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("gave up after %v, want about %v", d, b.GiveUp)
	}
}

func TestReattachBackoffStartsOverAfterProgress(t *testing.T) {
	w := &watcher{
		openErr: []error{errUnavailable, nil, errUnavailable, nil},
		streams: []func() (*buildv1.BuildEvent, error){
			nil, events(errUnavailable, logSeq(2)),
			nil, events(io.EOF, logSeq(3)),
		},
	}
	var ns []int
	r := NewReattacher("", events(errUnavailable, logSeq(1)), w.watch, ReattachOptions{
		Backoff: fastBackoff,
		Notify:  func(a Attempt) { ns = append(ns, a.N) },
	})
	got, err := readAll(r)
	if !errors.Is(err, io.EOF) || !reflect.DeepEqual(got, seqs(1, 3)) {
		t.Fatalf("seqs %v, err %v; want 1..3 and io.EOF", got, err)
	}
	if want := []int{1, 2, 1, 2}; !reflect.DeepEqual(ns, want) {
		t.Errorf("attempt numbers = %v, want %v", ns, want)
	}
}

func TestReattachInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewReattacher("", events(errUnavailable, logSeq(1)), (&watcher{}).watch, ReattachOptions{
		Backoff: Backoff{Initial: time.Hour},
		Notify:  func(Attempt) { cancel() },
	})
	if _, err := r.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Recv(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestFollowReattached runs Follow on a Reattacher whose streams break
// twice: the display sees every progress event once, in order.
func TestFollowReattached(t *testing.T) {
	result := &buildv1.BuildEvent{BuildId: "b1", Seq: 11, Event: &buildv1.BuildEvent_Result{Result: &buildv1.BuildResult{Image: "r@sha256:x"}}}
	w := &watcher{streams: []func() (*buildv1.BuildEvent, error){
		events(errUnavailable, logRange(1, 7)...),
		events(io.EOF, append(logRange(6, 10), result)...),
	}}
	r := NewReattacher("", events(status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), logRange(1, 4)...), w.watch, ReattachOptions{Backoff: fastBackoff})
	ctx := context.Background()
	ch := make(chan *client.SolveStatus)
	got := collect(ch)
	res, berr, err := Follow(ctx, func() (*buildv1.BuildEvent, error) { return r.Recv(ctx) }, ch, nil)
	if err != nil || berr != nil || res.GetImage() != "r@sha256:x" {
		t.Fatalf("Follow = %v, %v, %v; want the result", res, berr, err)
	}
	var lines []string
	for _, s := range <-got {
		for _, l := range s.Logs {
			lines = append(lines, string(l.Data))
		}
	}
	var want []string
	for i := 1; i <= 10; i++ {
		want = append(want, fmt.Sprintf("line %d\n", i))
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("logs shown = %q, want %q", lines, want)
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{errUnavailable, true},
		{fmt.Errorf("receive build event: %w", errUnavailable), true},
		{status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: PROTOCOL_ERROR"), true},
		{status.Error(codes.Internal, "server closed the stream without sending trailers"), true},
		{status.Error(codes.Internal, "store broken"), false},
		{status.Error(codes.NotFound, "no build b1"), false},
		{status.Error(codes.InvalidArgument, "build_id is empty"), false},
		{status.Error(codes.Canceled, "context canceled"), false},
		{context.Canceled, false},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{errors.New("something else"), false},
	}
	for _, tt := range tests {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
