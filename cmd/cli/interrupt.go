package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// exitInterrupted is the exit code of a build the user interrupted with
// Ctrl-C: 128 + SIGINT, what a shell reports for a command SIGINT ended.
const exitInterrupted = 130

// signalGrace bounds how long the interrupter waits, once main's signal
// context has ended, for the signal that ended it to arrive on its own
// channel. The runtime hands a signal to every channel at once, so the wait
// only ever runs out for a signal the interrupter does not listen to.
const signalGrace = time.Second

// interruptsKey is the context key of the channel a test sends interrupts
// on, in place of the process's signals.
type interruptsKey struct{}

// withInterrupts returns ctx carrying ch as the build command's source of
// interrupts instead of SIGINT and SIGTERM: a test sends os.Interrupt on it
// for a Ctrl-C.
func withInterrupts(ctx context.Context, ch <-chan os.Signal) context.Context {
	return context.WithValue(ctx, interruptsKey{}, ch)
}

// interrupts returns the channel of the signals that interrupt a build
// command: ctx's if a test gave one (withInterrupts), or else SIGINT's and
// SIGTERM's until stop is called.
func interrupts(ctx context.Context) (ch <-chan os.Signal, stop func()) {
	if ch, ok := ctx.Value(interruptsKey{}).(<-chan os.Signal); ok {
		return ch, func() {}
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	return sigs, func() { signal.Stop(sigs) }
}

// The reasons the interrupter ends a follow.
var (
	// errNotNamed: Ctrl-C before the server named the build.
	errNotNamed = errors.New("interrupted before the server named the build")
	// errLeft: Ctrl-C a second time.
	errLeft = errors.New("left the build")
	// errFollowDone: the follow is over; nothing is left to interrupt.
	errFollowDone = errors.New("the follow is over")
)

// cancelError is why CancelBuild failed.
type cancelError struct{ err error }

func (e *cancelError) Error() string { return "cancel build: " + e.err.Error() }
func (e *cancelError) Unwrap() error { return e.err }

// signalError ends a follow on a signal other than SIGINT (SIGTERM).
type signalError struct{ sig os.Signal }

func (e signalError) Error() string { return e.sig.String() }

// interrupter decides what the user's Ctrl-C does to the build a follower
// shows. The first cancels the build on the server (CancelBuild), says so,
// and the follow goes on until the build ends CANCELLED; if no event has
// named the build yet, there is nothing to cancel and the follow ends at
// once. The second Ctrl-C ends the follow at once, the build maybe still
// running. Either way the command's exit code is 130.
//
// SIGTERM, or the command's own context ending, leaves the build running
// and the command exits 1, as a broken connection that cannot be
// reattached does. The one exception is main's signal context, which ends
// on the same Ctrl-C that the interrupter sees: the follow runs in a
// context of its own, so that the Ctrl-C is the interrupter's to handle.
type interrupter struct {
	f *follower
	// ctx is the follow's; CancelBuild runs in it too. cancel ends it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	signals int // every signal seen
	sigints int // Ctrl-C seen
	calls   sync.WaitGroup
}

// watch handles the signals on sigs, and parent (the command's context)
// ending, until done is closed.
func (ir *interrupter) watch(parent context.Context, sigs <-chan os.Signal, done <-chan struct{}) {
	parentDone := parent.Done()
	var grace <-chan time.Time
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			ir.signal(s)
		case <-parentDone:
			parentDone = nil
			switch {
			case !signalCaused(parent):
				ir.stop(context.Cause(parent))
			case ir.seen() == 0:
				// The signal is on its way to sigs too.
				grace = time.After(signalGrace)
			}
		case <-grace:
			grace = nil
			if ir.seen() == 0 {
				ir.stop(context.Cause(parent))
			}
		}
	}
}

// signalCaused reports whether ctx ended with a cause of its own, as
// main's signal context (signal.NotifyContext) does, rather than by a
// plain cancel or deadline, whose cause is ctx.Err() itself. (The signal
// context's cause is also context.Canceled to errors.Is: only identity
// tells them apart.)
func signalCaused(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return cause != nil && cause != ctx.Err() //nolint:errorlint // identity, see above
}

func (ir *interrupter) seen() int {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	return ir.signals
}

// signal handles signal s.
func (ir *interrupter) signal(s os.Signal) {
	ir.mu.Lock()
	ir.signals++
	if s == os.Interrupt {
		ir.sigints++
	}
	n := ir.sigints
	ir.mu.Unlock()
	id := ir.f.buildID()
	switch {
	case s != os.Interrupt:
		ir.stop(signalError{s})
	case n > 1:
		ir.f.completeNotices()
		ir.stop(errLeft)
	case id == "":
		ir.stop(errNotNamed)
	default:
		ir.f.notice(fmt.Sprintf("cancelling build %s (Ctrl-C again to leave it running)", id))
		ir.calls.Add(1)
		go func() {
			defer ir.calls.Done()
			_, err := ir.f.bc.CancelBuild(ir.ctx, &buildv1.CancelBuildRequest{BuildId: id})
			if err != nil && ir.ctx.Err() == nil {
				ir.stop(&cancelError{err})
			}
		}()
	}
}

// stop ends the follow; the first reason given is the one that counts.
func (ir *interrupter) stop(why error) { ir.cancel(why) }

// wait ends the follow's context, if the follow had not ended yet, and waits
// for the CancelBuild call, if one was made.
func (ir *interrupter) wait() {
	ir.cancel(errFollowDone)
	ir.calls.Wait()
}

// outcome is the command's error for a follow that ended with berr or err,
// when the interrupter had a part in it, or nil when the follow's outcome
// stands as it is: no Ctrl-C, or the build ended before the cancel took.
func (ir *interrupter) outcome(id string, berr *buildv1.BuildError, err error) error {
	var cause error
	if ir.ctx.Err() != nil {
		cause = context.Cause(ir.ctx)
	}
	ir.mu.Lock()
	sigints := ir.sigints
	ir.mu.Unlock()
	var ce *cancelError
	switch {
	case errors.Is(cause, errNotNamed):
		return cli.Exit("interrupted before the server named the build: it may have started ('buildsvc builds ls' lists the builds)", exitInterrupted)
	case errors.Is(cause, errLeft):
		return cli.Exit(fmt.Sprintf("left build %[1]s without waiting: it may still be running ('buildsvc builds cancel %[1]s' cancels it, 'buildsvc builds watch %[1]s' reattaches)", id), exitInterrupted)
	case errors.As(cause, &ce):
		return cli.Exit(fmt.Sprintf("cancel build %[1]s: %[2]s; it may still be running ('buildsvc builds cancel %[1]s' cancels it, 'buildsvc builds watch %[1]s' reattaches)", id, describe(ce.err)), exitInterrupted)
	case cause != nil:
		// SIGTERM, or the command's context ended: the build goes on.
		return withBuildID(cli.Exit("interrupted", exitFailed), id)
	case sigints == 0:
		return nil
	case err != nil:
		// The stream failed after the Ctrl-C had asked for the cancel.
		return cli.Exit(fmt.Sprintf("%s (build %s); %s", describe(err), id, runningHint(id)), exitInterrupted)
	case berr != nil && codes.Code(berr.GetCode()) == codes.Canceled:
		return cli.Exit(fmt.Sprintf("build %[1]s cancelled; 'buildsvc builds logs %[1]s' shows its logs", id), exitInterrupted)
	}
	return nil
}
