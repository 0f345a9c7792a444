//go:build linux

package main

import (
	"context"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// terminal is a pseudo-terminal for the CLI's stderr.
type terminal struct {
	tty    *os.File
	screen *syncBuffer // what the CLI wrote, as it comes
	closed chan struct{}
}

// newTerminal opens a 100x24 pseudo-terminal, or skips the test.
func newTerminal(t *testing.T) *terminal {
	t.Helper()
	ptm, slavePath, err := console.NewPty()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := ptm.Resize(console.WinSize{Height: 24, Width: 100}); err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	term := &terminal{tty: tty, screen: &syncBuffer{}, closed: make(chan struct{})}
	go func() {
		_, _ = io.Copy(term.screen, ptm) // ends with EIO once the terminal is closed
		close(term.closed)
	}()
	return term
}

// close closes the CLI's side and returns all it wrote.
func (term *terminal) close() string {
	term.tty.Close()
	<-term.closed
	return term.screen.String()
}

// TestBuildOnTTY runs a build with stderr on a pseudo-terminal, where the
// progress display redraws in place: the line naming the build comes
// before the display starts, and no state lines may go there.
func TestBuildOnTTY(t *testing.T) {
	for _, mode := range []string{"auto", "tty"} {
		t.Run(mode, func(t *testing.T) {
			term := newTerminal(t)
			addr := (&fakeServer{events: successEvents()}).start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout syncBuffer
			code := run(ctx, []string{"buildsvc", "build", "--server", addr, "--progress", mode, "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1"}, &stdout, term.tty)
			out := term.close()
			if code != exitOK || stdout.String() != testImage+"\n" {
				t.Fatalf("exit code %d, stdout %q; want 0 and the image\nterminal:\n%q", code, stdout.String(), out)
			}
			if !strings.Contains(out, "go build ./cmd/app") {
				t.Errorf("the terminal does not show the build's step:\n%q", out)
			}
			if !strings.HasPrefix(out, "build b-1: started\r\n") {
				t.Errorf("the terminal does not start with the build's id:\n%q", out)
			}
			for _, state := range []string{"build b-1: queued", "build b-1: building", "build b-1: succeeded"} {
				if strings.Contains(out, state) {
					t.Errorf("state line %q went to the terminal:\n%q", state, out)
				}
			}
		})
	}
}

// TestBuildFailureOnTTY: the failed build's error, after the display, names
// the build and the commands to see it again and its logs.
func TestBuildFailureOnTTY(t *testing.T) {
	term := newTerminal(t)
	failed := append(progressEvs(),
		stateEv(buildv1.BuildState_BUILD_STATE_FAILED, ""),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}}},
	)
	addr := (&fakeServer{events: failed}).start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout syncBuffer
	code := run(ctx, append([]string{"buildsvc", "build", "--server", addr, "--progress", "tty"}, buildArgs...), &stdout, term.tty)
	out := term.close()
	want := "error: go build: exit code 1 (build b-1); 'buildsvc builds watch b-1' shows it again, 'buildsvc builds logs b-1' its logs\r\n"
	if code != exitFailed || stdout.String() != "" || !strings.HasSuffix(out, want) {
		t.Errorf("exit code %d, stdout %q; want 1 and the terminal to end with %q\nterminal:\n%q", code, stdout.String(), want, out)
	}
	if !strings.HasPrefix(out, "build b-1: started\r\n") {
		t.Errorf("the terminal does not start with the build's id:\n%q", out)
	}
}

// TestBuildCtrlCOnTTY: on a terminal, the notice of the cancel is a step of
// the display (a line of text would tear it), done once the build is.
func TestBuildCtrlCOnTTY(t *testing.T) {
	term := newTerminal(t)
	s := newCancelServer(successEvents()[:6])
	addr := s.start(t)
	sigs := make(chan os.Signal, 1)
	ctx, cancel := context.WithTimeout(withInterrupts(context.Background(), sigs), 30*time.Second)
	defer cancel()
	codec := make(chan int, 1)
	var stdout syncBuffer
	go func() {
		codec <- run(ctx, append([]string{"buildsvc", "build", "--server", addr, "--progress", "tty"}, buildArgs...), &stdout, term.tty)
	}()
	waitFor(t, term.screen, "go build ./cmd/app")
	sigs <- os.Interrupt
	code := <-codec
	out := term.close()
	if code != exitInterrupted || stdout.String() != "" {
		t.Fatalf("exit code %d, stdout %q; want 130\nterminal:\n%q", code, stdout.String(), out)
	}
	if !strings.Contains(out, "=> cancelling build b-1 (Ctrl-C again to leave it running)") {
		t.Errorf("the display does not show the cancel:\n%q", out)
	}
	if !strings.Contains(out, "FINISHED") {
		t.Errorf("the display did not finish:\n%q", out)
	}
	if want := "error: build b-1 cancelled; 'buildsvc builds logs b-1' shows its logs\r\n"; !strings.HasSuffix(out, want) {
		t.Errorf("the terminal does not end with %q:\n%q", want, out)
	}
	s.wantCancel(t)
}
