package progress

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/moby/buildkit/client"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ErrNoOutcome is returned by Follow when the event stream ends before the
// build's last event (a result or an error) arrived.
var ErrNoOutcome = errors.New("event stream ended before the build did")

// Follow reads a build's events with recv (for example a CreateImage or
// WatchBuild stream's Recv, or a Reattacher's) until the build's last event, and returns how the
// build ended: its result if it succeeded, or its error if it ended without an
// image. Progress events go to ch as SolveStatus values, ready for
// progressui.Display.UpdateFrom; state events go to onState, if it is not
// nil, in order and on Follow's goroutine; other events are ignored.
//
// The third result is set instead when the build's outcome is unknown: recv
// failed (the error wraps recv's, so its gRPC status stays readable with
// errors.As), the stream ended early (ErrNoOutcome), or ctx ended while a
// progress update waited for the reader of ch.
//
// Follow closes ch when it returns.
func Follow(ctx context.Context, recv Recv, ch chan<- *client.SolveStatus, onState func(*buildv1.BuildEvent)) (*buildv1.BuildResult, *buildv1.BuildError, error) {
	defer close(ch)
	for {
		e, err := recv()
		if errors.Is(err, io.EOF) {
			return nil, nil, ErrNoOutcome
		}
		if err != nil {
			return nil, nil, fmt.Errorf("receive build event: %w", err)
		}
		switch ev := e.GetEvent().(type) {
		case *buildv1.BuildEvent_Result:
			if ev.Result == nil {
				return nil, nil, errors.New("result event without a result")
			}
			return ev.Result, nil, nil
		case *buildv1.BuildEvent_Error:
			if ev.Error == nil {
				return nil, nil, errors.New("error event without an error")
			}
			return nil, ev.Error, nil
		case *buildv1.BuildEvent_State:
			if onState != nil && ev.State != nil {
				onState(e)
			}
		default:
			s := ToSolveStatus(e)
			if s == nil {
				continue
			}
			select {
			case ch <- s:
			case <-ctx.Done():
				return nil, nil, fmt.Errorf("show build progress: %w", context.Cause(ctx))
			}
		}
	}
}
