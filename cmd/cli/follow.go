package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	digest "github.com/opencontainers/go-digest"
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

// followOptions say which build showBuildWith follows and how.
type followOptions struct {
	// id is the build's id if the user gave it, or "" until the first
	// event names the build (build).
	id string
	// open opens the first stream of the build's events.
	open openFunc
	// interrupts, if not nil, are the user's Ctrl-C (see interrupter):
	// the first cancels the build, the second leaves. Without them, the
	// command's context ending leaves the build running.
	interrupts <-chan os.Signal
	// events, if not nil, gets every event of the build as a line of JSON
	// (--output json), and the pushed image is not printed.
	events io.Writer
}

// showBuild shows a build's progress on disp, from the first event of the
// stream open gives until the build ends, reattaching when the stream breaks,
// and then prints the pushed image on stdout. id is the build's id if the
// caller knows it, or "".
func showBuild(cCtx *cli.Context, bc buildv1.BuildClient, disp display, id string, open openFunc) error {
	return showBuildWith(cCtx, bc, disp, followOptions{id: id, open: open})
}

// showBuildWith is showBuild with options. The error is the command's: its
// exit code is 1 if the build failed, was cancelled or interrupted, or its
// outcome is unknown, 2 if the server refused it as invalid, and 130 if the
// user interrupted the command (see interrupter). Unless the user gave the
// build's id, the error names the build and the commands that show it again.
func showBuildWith(cCtx *cli.Context, bc buildv1.BuildClient, disp display, o followOptions) error {
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
	f := newFollower(bc, disp, o, onState)
	ctx := cCtx.Context
	var ir *interrupter
	if o.interrupts != nil {
		// The build outlives the command's context: Ctrl-C ends main's
		// signal context, and the interrupter decides what that means.
		fctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		defer cancel(nil)
		ir = &interrupter{f: f, ctx: fctx, cancel: cancel}
		done := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			ir.watch(cCtx.Context, o.interrupts, done)
		}()
		defer func() {
			close(done)
			<-watched
			ir.wait()
		}()
		ctx = fctx
	}
	res, berr, err := f.follow(ctx)
	id := f.buildID()
	if final != nil && disp.states != nil {
		fmt.Fprintln(disp.states, stateLine(final))
	}
	if ir != nil {
		if err := ir.outcome(id, berr, err); err != nil {
			return err
		}
	}
	given := o.id != ""
	switch {
	case err != nil:
		return followError(cCtx, err, id, given)
	case berr != nil:
		// The stream's own error status, after the BuildError event,
		// says the same: it is never read, so the error is told once.
		if o.events == nil {
			disp.failure(id, berr)
		}
		msg := berr.GetMessage()
		if msg == "" {
			msg = "build failed: " + codes.Code(berr.GetCode()).String()
		}
		if !given {
			msg = fmt.Sprintf("%s (build %s); %s", msg, id, endedHint(id))
		}
		return cli.Exit(msg, exitCodeFor(codes.Code(berr.GetCode())))
	case res.GetImage() == "":
		return cli.Exit(fmt.Sprintf("build %s: the server reported success without an image", id), exitFailed)
	case o.events != nil:
		return nil // the result event was the last line
	}
	if l := cacheUsageLine(res.GetCacheUsage()); l != "" {
		fmt.Fprintf(cCtx.App.ErrWriter, "build %s: %s\n", id, l)
	}
	if res.GetIndex() {
		for _, l := range platformLines(res) {
			fmt.Fprintf(cCtx.App.ErrWriter, "build %s: %s\n", id, l)
		}
	}
	_, err = fmt.Fprintln(cCtx.App.Writer, res.GetImage())
	return err
}

// failure shows why build id failed, before the command's error says what
// the error was: the reason, the step that failed with its exit code, and
// the step's last lines of output. Only the tty and plain displays show it:
// rawjson's stderr is JSON lines and quiet's is the error alone.
func (d display) failure(id string, berr *buildv1.BuildError) {
	if d.mode != progressui.TtyMode && d.mode != progressui.PlainMode {
		return
	}
	for _, l := range failureSummary(id, berr) {
		fmt.Fprintln(d.w, l)
	}
}

// failureSummary is what failure shows of build id's error, for example
//
//	build ID: COMPILE_ERROR in step "go build ./cmd/app" (exit code 1); its last lines:
//	  ./main.go:7:2: undefined: undefinedThing
//
// and nothing for an error with neither a reason nor a step (a server that
// gives neither): its message, the command's error, says all there is.
func failureSummary(id string, berr *buildv1.BuildError) []string {
	reason, step := berr.GetReason(), berr.GetStep()
	if reason == "" && step == "" {
		return nil
	}
	if reason == "" {
		reason = "failed"
	}
	head := fmt.Sprintf("build %s: %s", id, reason)
	if step != "" {
		head += fmt.Sprintf(" in step %q", step)
	}
	if c := berr.GetExitCode(); c != 0 {
		head += fmt.Sprintf(" (exit code %d)", c)
	}
	tail := berr.GetLogTail()
	if len(tail) == 0 {
		return []string{head}
	}
	lines := []string{head + "; its last lines:"}
	for _, l := range tail {
		lines = append(lines, "  "+l)
	}
	return lines
}

// endedHint names the commands about a build that has ended.
func endedHint(id string) string {
	return fmt.Sprintf("'buildsvc builds watch %[1]s' shows it again, 'buildsvc builds logs %[1]s' its logs", id)
}

// runningHint names the commands about a build that may still be running.
func runningHint(id string) string {
	return fmt.Sprintf("it may still be running: 'buildsvc builds watch %[1]s' reattaches, 'buildsvc builds logs %[1]s' shows its logs", id)
}

// follower follows one build: it shows the build's events on its display
// until the build ends, reattaching when the stream breaks.
type follower struct {
	bc      buildv1.BuildClient
	disp    display
	opts    followOptions
	onState func(*buildv1.BuildEvent)

	// notes feeds the tty display the notices shown while it runs.
	notes chan *client.SolveStatus

	mu     sync.Mutex
	id     string           // once known
	active []*client.Vertex // notices shown on the tty, not yet completed
}

// newFollower makes the follower of the build o names. onState gets the
// build's state changes, as progress.Follow says.
func newFollower(bc buildv1.BuildClient, disp display, o followOptions, onState func(*buildv1.BuildEvent)) *follower {
	return &follower{bc: bc, disp: disp, opts: o, onState: onState, id: o.id, notes: make(chan *client.SolveStatus, 8)}
}

// buildID returns the build's id, or "" until it is known. It may be
// called from any goroutine.
func (f *follower) buildID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.id
}

// follow shows the build's events until the build ends, and returns the
// build's outcome as progress.Follow does. The first stream is opts.open's;
// when a stream breaks, follow reattaches from the last event shown, so the
// display sees every event once. The display starts with the first event,
// after the line that names the build, and has finished when follow
// returns.
func (f *follower) follow(ctx context.Context) (*buildv1.BuildResult, *buildv1.BuildError, error) {
	fromFollow := make(chan *client.SolveStatus)
	toDisplay := make(chan *client.SolveStatus)
	begin := make(chan struct{})
	var beginOnce sync.Once
	start := func() { beginOnce.Do(func() { close(begin) }) }

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-begin:
		case <-gctx.Done():
			return nil
		}
		// Warnings are shown by the display itself.
		_, err := f.disp.UpdateFrom(gctx, toDisplay)
		return err
	})
	g.Go(func() error { return f.forward(gctx, fromFollow, toDisplay) })
	var (
		res  *buildv1.BuildResult
		berr *buildv1.BuildError
	)
	g.Go(func() error {
		defer start()
		first, err := f.opts.open(gctx)
		if err != nil {
			close(fromFollow)
			return err
		}
		r := newReattacher(f.bc, f.opts.id, first, f.disp.states)
		recv := func() (*buildv1.BuildEvent, error) {
			e, err := r.Recv(gctx)
			if err != nil {
				return nil, err
			}
			f.seen(e, start)
			if f.opts.events != nil {
				if err := writeJSONLine(f.opts.events, e); err != nil {
					return nil, err
				}
			}
			return e, nil
		}
		res, berr, err = progress.Follow(gctx, recv, fromFollow, f.onState)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return res, berr, nil
}

// followBuild shows a build's events on disp until the build ends, as
// showBuild does without printing anything after, and returns the build's
// outcome as progress.Follow does, with the build's id once known.
func followBuild(ctx context.Context, bc buildv1.BuildClient, disp display, id string, open openFunc, onState func(*buildv1.BuildEvent)) (*buildv1.BuildResult, *buildv1.BuildError, string, error) {
	f := newFollower(bc, disp, followOptions{id: id, open: open}, onState)
	res, berr, err := f.follow(ctx)
	return res, berr, f.buildID(), err
}

// seen notes event e of the build: the first names the build, which is then
// said before the display starts; the last completes the notices.
func (f *follower) seen(e *buildv1.BuildEvent, startDisplay func()) {
	f.mu.Lock()
	first := f.id == "" && e.GetBuildId() != ""
	if first {
		f.id = e.GetBuildId()
	}
	f.mu.Unlock()
	if first {
		f.disp.started(e.GetBuildId())
	}
	startDisplay()
	if e.GetResult() != nil || e.GetError() != nil {
		f.completeNotices()
	}
}

// forward passes what Follow sends on in to out, with the notices, and
// closes out when in is closed.
func (f *follower) forward(ctx context.Context, in <-chan *client.SolveStatus, out chan<- *client.SolveStatus) error {
	defer close(out)
	send := func(s *client.SolveStatus) bool {
		select {
		case out <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		select {
		case s, ok := <-in:
			if !ok {
				// Notices queued before Follow returned come last.
				for {
					select {
					case s := <-f.notes:
						if !send(s) {
							return nil
						}
					default:
						return nil
					}
				}
			}
			if !send(s) {
				return nil
			}
		case s := <-f.notes:
			if !send(s) {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// notice shows msg about the build while it is followed. A tty display
// would tear under a line of text, so there the notice is a step of its
// own, running until the build ends; elsewhere it is a line.
func (f *follower) notice(msg string) {
	if f.disp.mode != progressui.TtyMode {
		f.disp.line(f.buildID(), msg)
		return
	}
	now := time.Now()
	f.mu.Lock()
	v := &client.Vertex{Digest: digest.Digest(fmt.Sprintf("buildsvc-notice-%d", len(f.active)+1)), Name: msg, Started: &now}
	f.active = append(f.active, v)
	f.mu.Unlock()
	f.queueNotice(v)
}

// completeNotices marks the notices on the tty as done.
func (f *follower) completeNotices() {
	f.mu.Lock()
	active := f.active
	f.active = nil
	f.mu.Unlock()
	now := time.Now()
	for _, v := range active {
		done := *v
		done.Completed = &now
		f.queueNotice(&done)
	}
}

// queueNotice hands v to the display. It never blocks: the queue has room
// for more notices than a build has.
func (f *follower) queueNotice(v *client.Vertex) {
	select {
	case f.notes <- &client.SolveStatus{Vertexes: []*client.Vertex{v}}:
	default:
	}
}

// followError turns the error of following build id (id may be "") into the
// command's error, which names the build unless the user gave its id.
func followError(cCtx *cli.Context, err error, id string, given bool) error {
	var re *progress.ReattachError
	switch {
	case cCtx.Context.Err() == nil && errors.As(err, &re):
		return cli.Exit(fmt.Sprintf("%v; the build may still be running: see 'buildsvc builds watch %[2]s', and 'buildsvc builds logs %[2]s' for its logs", re, re.BuildID), exitFailed)
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
// build an id, and the commands to look it up: the build's outcome is
// unknown.
func withBuildID(err error, id string) error {
	if id == "" {
		return err
	}
	code := exitFailed
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	return cli.Exit(fmt.Sprintf("%v (build %s); %s", err, id, runningHint(id)), code)
}
