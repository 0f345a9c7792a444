package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moby/buildkit/client"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// reattachBackoff paces reattaching to a build whose stream broke; tests make
// it fast.
var reattachBackoff = progress.DefaultBackoff

// openFunc opens the first stream of a build's events: CreateImage for
// `build`, WatchBuild for `builds watch`.
type openFunc func(ctx context.Context) (progress.Recv, error)

// watchFunc resumes a build's events with WatchBuild.
func watchFunc(bc buildv1.BuildClient) progress.WatchFunc {
	return func(ctx context.Context, id string, fromSeq uint64) (progress.Recv, error) {
		stream, err := bc.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id, FromSeq: fromSeq})
		if err != nil {
			return nil, fmt.Errorf("watch build: %w", err)
		}
		return stream.Recv, nil
	}
}

// newReattacher reads a build's events from first and reattaches with
// WatchBuild when the stream breaks, telling w (if not nil) about it.
func newReattacher(bc buildv1.BuildClient, id string, first progress.Recv, w io.Writer) *progress.Reattacher {
	opts := progress.ReattachOptions{Backoff: reattachBackoff}
	if w != nil {
		opts.Notify = func(a progress.Attempt) { fmt.Fprintln(w, reattachLine(a)) }
	}
	return progress.NewReattacher(id, first, watchFunc(bc), opts)
}

// reattachLine describes an attempt to reattach in one line, e.g.
// "build 01J...: stream broken (unavailable: connection refused); reattaching after event 12 in 400ms".
func reattachLine(a progress.Attempt) string {
	why := "stream broken"
	if a.N > 1 {
		why = "reattach failed"
	}
	return fmt.Sprintf("build %s: %s (%s); reattaching after event %d in %v", a.BuildID, why, describe(a.Err), a.FromSeq, a.Wait)
}

// describe says what went wrong in a few words: a gRPC status as its code
// and message, anything else as it is.
func describe(err error) string {
	if st, ok := grpcStatus(err); ok && st.Code() != codes.OK {
		return strings.ToLower(st.Code().String()) + ": " + st.Message()
	}
	return fmt.Sprint(err)
}

// showBuild shows a build's progress on disp, from the first event of the
// stream open gives until the build ends, reattaching when the stream breaks,
// and then prints the pushed image on stdout. id is the build's id if the
// caller knows it, or "". The error is the command's: its exit code is 1 if
// the build failed, was cancelled or interrupted, or its outcome is unknown,
// and 2 if the server refused it as invalid.
func showBuild(cCtx *cli.Context, bc buildv1.BuildClient, disp display, id string, open openFunc) error {
	var final *buildv1.BuildEvent
	onState := func(e *buildv1.BuildEvent) {
		if ended(e.GetState().GetState()) {
			// The plain display buffers a little: shown now, the build's
			// end could come before its last progress lines.
			final = e
			return
		}
		if disp.states != nil {
			fmt.Fprintln(disp.states, stateLine(e))
		}
	}
	given := id != ""
	res, berr, id, err := followBuild(cCtx.Context, bc, disp, id, open, onState)
	if final != nil && disp.states != nil {
		fmt.Fprintln(disp.states, stateLine(final))
	}
	switch {
	case err != nil:
		return followError(cCtx, err, id, given)
	case berr != nil:
		msg := berr.GetMessage()
		if msg == "" {
			msg = "build failed: " + codes.Code(berr.GetCode()).String()
		}
		return cli.Exit(msg, exitCodeFor(codes.Code(berr.GetCode())))
	case res.GetImage() == "":
		return cli.Exit(fmt.Sprintf("build %s: the server reported success without an image", id), exitFailed)
	}
	_, err = fmt.Fprintln(cCtx.App.Writer, res.GetImage())
	return err
}

// followBuild shows a build's events on disp until the build ends, and
// returns the build's outcome as progress.Follow does, with the build's id
// once known. The first stream is open's; when a stream breaks, followBuild
// reattaches from the last event shown, so the display sees every event
// once. The display has finished when followBuild returns.
func followBuild(ctx context.Context, bc buildv1.BuildClient, disp display, id string, open openFunc, onState func(*buildv1.BuildEvent)) (*buildv1.BuildResult, *buildv1.BuildError, string, error) {
	ch := make(chan *client.SolveStatus)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// Warnings are shown by the display itself.
		_, err := disp.UpdateFrom(gctx, ch)
		return err
	})
	var (
		res  *buildv1.BuildResult
		berr *buildv1.BuildError
		r    *progress.Reattacher
	)
	g.Go(func() error {
		first, err := open(gctx)
		if err != nil {
			close(ch)
			return err
		}
		r = newReattacher(bc, id, first, disp.states)
		res, berr, err = progress.Follow(gctx, func() (*buildv1.BuildEvent, error) { return r.Recv(gctx) }, ch, onState)
		return err
	})
	err := g.Wait()
	if r != nil {
		id = r.BuildID()
	}
	if err != nil {
		return nil, nil, id, err
	}
	return res, berr, id, nil
}

// followError turns the error of following build id (id may be "") into the
// command's error, which names the build unless the user gave its id.
func followError(cCtx *cli.Context, err error, id string, given bool) error {
	var re *progress.ReattachError
	switch {
	case cCtx.Context.Err() == nil && errors.As(err, &re):
		return cli.Exit(fmt.Sprintf("%v; the build may still be running: see 'buildsvc builds watch %s'", re, re.BuildID), exitFailed)
	case cCtx.Context.Err() == nil && id == "" && progress.Transient(err) && !notConnected(err):
		// Nothing named the build yet: there is nothing to reattach to.
		return cli.Exit(fmt.Sprintf("%v (the stream broke before the server named the build, so it cannot be reattached; 'buildsvc builds ls' lists the builds)", callError(cCtx, cCtx.Command.Name, err)), exitFailed)
	}
	err = callError(cCtx, cCtx.Command.Name, err)
	if given {
		return err
	}
	return withBuildID(err, id)
}

// notConnected reports whether err says that the client never reached the
// server (gRPC words its dial failures "connection error: ..."), so that no
// request was sent and no build can have started.
func notConnected(err error) bool {
	st, ok := grpcStatus(err)
	return ok && strings.HasPrefix(st.Message(), "connection error:")
}

// withBuildID names the build in err's message, once the server gave the
// build an id, so that the user can look it up.
func withBuildID(err error, id string) error {
	if id == "" {
		return err
	}
	code := exitFailed
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	return cli.Exit(fmt.Sprintf("%v (build %s)", err, id), code)
}
