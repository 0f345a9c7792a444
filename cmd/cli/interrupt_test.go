package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// cancelServer is a fakeServer whose CreateImage streams its events and then
// waits for CancelBuild, and ends the build CANCELLED as the real server
// does. It records the requests in the fakeServer.
type cancelServer struct {
	*fakeServer
	cancelled chan struct{} // closed by the first CancelBuild
	once      sync.Once
	// ignore makes the build go on after CancelBuild, as a build whose
	// cancel takes long does.
	ignore bool
	// cancelErr, if not nil, is CancelBuild's answer.
	cancelErr error
	// after are the events sent after the cancel; nil: the build ends
	// CANCELLED.
	after []*buildv1.BuildEvent
}

func newCancelServer(events []*buildv1.BuildEvent) *cancelServer {
	return &cancelServer{fakeServer: &fakeServer{events: events}, cancelled: make(chan struct{})}
}

func (s *cancelServer) CreateImage(req *buildv1.CreateImageRequest, stream grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	s.record(req)
	seq := uint64(0)
	send := func(e *buildv1.BuildEvent) error {
		seq++
		e = proto.CloneOf(e)
		e.BuildId, e.Seq, e.Time = "b-1", seq, timestamppb.Now()
		return stream.Send(e)
	}
	for _, e := range s.events {
		if err := send(e); err != nil {
			return err
		}
	}
	select {
	case <-s.cancelled:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if s.ignore {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	after := s.after
	if after == nil {
		after = []*buildv1.BuildEvent{
			stateEv(buildv1.BuildState_BUILD_STATE_CANCELLED, ""),
			{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Canceled), Message: "the build was cancelled"}}},
		}
	}
	for _, e := range after {
		if err := send(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *cancelServer) CancelBuild(_ context.Context, req *buildv1.CancelBuildRequest) (*buildv1.CancelBuildResponse, error) {
	s.record(req)
	if s.cancelErr != nil {
		return nil, s.cancelErr
	}
	s.once.Do(func() { close(s.cancelled) })
	return &buildv1.CancelBuildResponse{Build: &buildv1.BuildInfo{BuildId: req.GetBuildId(), State: buildv1.BuildState_BUILD_STATE_CANCELLED}}, nil
}

// start serves s on a loopback port and returns its address.
func (s *cancelServer) start(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	buildv1.RegisterBuildServer(gs, s)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// cancels returns the builds CancelBuild was asked to cancel.
func (s *cancelServer) cancels() []string {
	var ids []string
	for _, c := range s.calls() {
		if c, ok := c.(*buildv1.CancelBuildRequest); ok {
			ids = append(ids, c.GetBuildId())
		}
	}
	return ids
}

// wantCancel checks that the CLI cancelled build b-1, once.
func (s *cancelServer) wantCancel(t *testing.T) {
	t.Helper()
	if got := s.cancels(); len(got) != 1 || got[0] != "b-1" {
		t.Errorf("CancelBuild calls for %q, want one for b-1", got)
	}
}

// waitFor waits until out holds want.
func waitFor(t *testing.T, out interface{ String() string }, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), want); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output after 10s:\n%s", want, out.String())
		}
	}
}

// interrupted is a build command running in the background with its
// interrupts on a channel.
type interrupted struct {
	sigs           chan os.Signal
	stdout, stderr *syncBuffer
	code           chan int
}

// startInterruptible runs `buildsvc build` against addr with the args in
// ctx, and returns at once.
func startInterruptible(ctx context.Context, t *testing.T, addr string, args ...string) *interrupted {
	t.Helper()
	r := &interrupted{sigs: make(chan os.Signal, 2), stdout: &syncBuffer{}, stderr: &syncBuffer{}, code: make(chan int, 1)}
	ctx, cancel := context.WithTimeout(withInterrupts(ctx, r.sigs), 30*time.Second)
	t.Cleanup(cancel)
	go func() {
		r.code <- run(ctx, append(append([]string{"buildsvc", "build", "--server", addr}, args...), buildArgs...), r.stdout, r.stderr)
	}()
	return r
}

// wait waits for the command's exit code.
func (r *interrupted) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.code:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("the command did not return\nstderr:\n%s", r.stderr.String())
		return 0
	}
}

// The first Ctrl-C cancels the build on the server and waits for it to end
// CANCELLED: exit code 130, and the last line says so.
func TestBuildCtrlC(t *testing.T) {
	for _, mode := range []string{"plain", "rawjson", "quiet"} {
		t.Run(mode, func(t *testing.T) {
			s := newCancelServer(successEvents()[:4])
			if mode == "quiet" {
				// Nothing on stderr says the client has the first event:
				// stdout does, with --output json.
				r := startInterruptible(context.Background(), t, s.start(t), "--progress", mode, "--output", "json")
				waitFor(t, r.stdout, `"buildId":"b-1"`)
				r.sigs <- os.Interrupt
				code := r.wait(t)
				want := "error: build b-1 cancelled; 'buildsvc builds logs b-1' shows its logs\n"
				if stderr := r.stderr.String(); code != exitInterrupted || !strings.HasSuffix(stderr, "\n"+want) && stderr != want {
					t.Errorf("exit code %d, stderr %q; want 130 and %q", code, stderr, want)
				}
				if evs := jsonEvents(t, r.stdout.String()); len(evs) != 6 || evs[5].GetError().GetCode() != int32(codes.Canceled) {
					t.Errorf("stdout has %d events, want the 4 before the cancel and CANCELLED's 2\n%s", len(evs), r.stdout.String())
				}
				s.wantCancel(t)
				return
			}
			r := startInterruptible(context.Background(), t, s.start(t), "--progress", mode)
			waitFor(t, r.stderr, "build b-1: started")
			r.sigs <- os.Interrupt
			code := r.wait(t)
			stderr := r.stderr.String()
			if code != exitInterrupted || r.stdout.String() != "" {
				t.Fatalf("exit code %d, stdout %q; want 130 and nothing\nstderr:\n%s", code, r.stdout.String(), stderr)
			}
			s.wantCancel(t)
			if want := "cancelling build b-1 (Ctrl-C again to leave it running)"; !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
			if got, want := lastLine(stderr), "error: build b-1 cancelled; 'buildsvc builds logs b-1' shows its logs"; got != want {
				t.Errorf("last stderr line %q, want %q", got, want)
			}
			if mode == "plain" && !strings.Contains(stderr, "build b-1: cancelled\n") {
				t.Errorf("the final state is not shown:\n%s", stderr)
			}
			if mode == "rawjson" {
				wantJSONLines(t, stderr)
			}
		})
	}
}

// requestsText lists the names of the requests f got.
type requestsText struct{ f *fakeServer }

func (r requestsText) String() string {
	var names []string
	for _, c := range r.f.calls() {
		names = append(names, string(c.ProtoReflect().Descriptor().Name()))
	}
	return strings.Join(names, " ")
}

// A second Ctrl-C leaves at once, saying that the build may still run and
// how to cancel it.
func TestBuildCtrlCTwice(t *testing.T) {
	s := newCancelServer(successEvents()[:4])
	s.ignore = true
	r := startInterruptible(context.Background(), t, s.start(t), "--progress", "plain")
	waitFor(t, r.stderr, "build b-1: started")
	r.sigs <- os.Interrupt
	waitFor(t, r.stderr, "cancelling build b-1 (Ctrl-C again to leave it running)")
	<-s.cancelled
	r.sigs <- os.Interrupt
	code := r.wait(t)
	want := "error: left build b-1 without waiting: it may still be running ('buildsvc builds cancel b-1' cancels it, 'buildsvc builds watch b-1' reattaches)"
	if got := lastLine(r.stderr.String()); code != exitInterrupted || got != want {
		t.Errorf("exit code %d, last stderr line %q; want 130 and %q\nstderr:\n%s", code, got, want, r.stderr.String())
	}
	s.wantCancel(t)
}

// Ctrl-C before any event named the build: there is nothing to cancel;
// the call is abandoned.
func TestBuildCtrlCBeforeID(t *testing.T) {
	s := newCancelServer(nil) // CreateImage sends nothing and waits
	r := startInterruptible(context.Background(), t, s.start(t), "--progress", "plain")
	waitFor(t, requestsText{s.fakeServer}, "CreateImageRequest")
	r.sigs <- os.Interrupt
	code := r.wait(t)
	want := "error: interrupted before the server named the build: it may have started ('buildsvc builds ls' lists the builds)"
	if got := lastLine(r.stderr.String()); code != exitInterrupted || got != want {
		t.Errorf("exit code %d, last stderr line %q; want 130 and %q\nstderr:\n%s", code, got, want, r.stderr.String())
	}
	if got := s.cancels(); len(got) != 0 {
		t.Errorf("CancelBuild calls for %q, want none", got)
	}
}

// signalContext is main's signal context, for SIGUSR1 (which a test can
// send itself): send ends it as a Ctrl-C ends main's, with the cause
// signal.NotifyContext gives.
func signalContext(t *testing.T) (ctx context.Context, send func()) {
	t.Helper()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGUSR1)
	t.Cleanup(stop)
	return ctx, func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		<-ctx.Done()
	}
}

// In the real command, main's signal context ends on the same Ctrl-C that
// the interrupter gets: the build is cancelled all the same, whichever
// comes first.
func TestBuildCtrlCEndsSignalContext(t *testing.T) {
	for _, signalFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "signal first", false: "context first"}[signalFirst], func(t *testing.T) {
			s := newCancelServer(successEvents()[:4])
			ctx, endContext := signalContext(t)
			r := startInterruptible(ctx, t, s.start(t), "--progress", "plain")
			waitFor(t, r.stderr, "build b-1: started")
			if signalFirst {
				r.sigs <- os.Interrupt
			}
			endContext()
			if !signalFirst {
				time.Sleep(10 * time.Millisecond)
				r.sigs <- os.Interrupt
			}
			code := r.wait(t)
			if got, want := lastLine(r.stderr.String()), "error: build b-1 cancelled; 'buildsvc builds logs b-1' shows its logs"; code != exitInterrupted || got != want {
				t.Errorf("exit code %d, last stderr line %q; want 130 and %q\nstderr:\n%s", code, got, want, r.stderr.String())
			}
			s.wantCancel(t)
		})
	}
}

// SIGTERM, and a signal context ending without a Ctrl-C (SIGTERM as main
// sees it), leave the build running, as before: exit code 1, no cancel.
func TestBuildTerminated(t *testing.T) {
	for _, how := range []string{"SIGTERM", "signal context"} {
		t.Run(how, func(t *testing.T) {
			s := newCancelServer(successEvents()[:4])
			ctx, endContext := signalContext(t)
			r := startInterruptible(ctx, t, s.start(t), "--progress", "plain")
			waitFor(t, r.stderr, "build b-1: started")
			if how == "SIGTERM" {
				r.sigs <- syscall.SIGTERM
			} else {
				endContext()
			}
			code := r.wait(t)
			want := "error: interrupted (build b-1); it may still be running: 'buildsvc builds watch b-1' reattaches, 'buildsvc builds logs b-1' shows its logs"
			if got := lastLine(r.stderr.String()); code != exitFailed || got != want {
				t.Errorf("exit code %d, last stderr line %q; want 1 and %q\nstderr:\n%s", code, got, want, r.stderr.String())
			}
			if got := s.cancels(); len(got) != 0 {
				t.Errorf("CancelBuild calls for %q, want none", got)
			}
		})
	}
}

// A cancel the server refuses ends the command, saying so.
func TestBuildCtrlCCancelFails(t *testing.T) {
	s := newCancelServer(successEvents()[:4])
	s.cancelErr = status.Error(codes.PermissionDenied, "not yours")
	r := startInterruptible(context.Background(), t, s.start(t), "--progress", "plain")
	waitFor(t, r.stderr, "build b-1: started")
	r.sigs <- os.Interrupt
	code := r.wait(t)
	want := "error: cancel build b-1: permissiondenied: not yours; it may still be running ('buildsvc builds cancel b-1' cancels it, 'buildsvc builds watch b-1' reattaches)"
	if got := lastLine(r.stderr.String()); code != exitInterrupted || got != want {
		t.Errorf("exit code %d, last stderr line %q; want 130 and %q\nstderr:\n%s", code, got, want, r.stderr.String())
	}
}

// A build that ends before the cancel takes keeps its outcome: here the
// image, exit code 0.
func TestBuildCtrlCTooLate(t *testing.T) {
	evs := successEvents()
	s := newCancelServer(evs[:len(evs)-2])
	s.after = evs[len(evs)-2:] // SUCCEEDED and the result
	r := startInterruptible(context.Background(), t, s.start(t), "--progress", "plain")
	waitFor(t, r.stderr, "build b-1: started")
	r.sigs <- os.Interrupt
	code := r.wait(t)
	if code != exitOK || r.stdout.String() != testImage+"\n" {
		t.Errorf("exit code %d, stdout %q; want 0 and the image\nstderr:\n%s", code, r.stdout.String(), r.stderr.String())
	}
	s.wantCancel(t)
}
