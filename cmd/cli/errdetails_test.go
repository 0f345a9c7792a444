package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

const compileMessage = `process "go build ./cmd/app" did not complete successfully: exit code: 1`

// compileError is the BuildError of a build whose go build step failed.
func compileError() *buildv1.BuildError {
	return &buildv1.BuildError{Code: int32(codes.Unknown), Message: compileMessage, Reason: "COMPILE_ERROR",
		Step: "go build ./cmd/app", ExitCode: 1, LogTail: []string{"# example.com/app", "./main.go:7:2: undefined: undefinedThing"}}
}

// compileFailure is a server whose build fails to compile, as the server
// ends it: the BuildError event last, then the call's error status with
// the BuildError and an ErrorInfo as details.
func compileFailure(t *testing.T) *fakeServer {
	t.Helper()
	berr := compileError()
	st, err := status.New(codes.Unknown, berr.GetMessage()).WithDetails(berr,
		&errdetails.ErrorInfo{Reason: berr.GetReason(), Domain: "buildsvc.dev", Metadata: map[string]string{"build_id": "b-1", "step": berr.GetStep(), "exit_code": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := append(progressEvs(), stateEv(buildv1.BuildState_BUILD_STATE_FAILED, berr.GetMessage()),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: berr}})
	return &fakeServer{events: evs, err: st.Err()}
}

var summaryLines = []string{
	`build b-1: COMPILE_ERROR in step "go build ./cmd/app" (exit code 1); its last lines:`,
	"  # example.com/app",
	"  ./main.go:7:2: undefined: undefinedThing",
}

const failureLine = "error: " + compileMessage + " (build b-1); 'buildsvc builds watch b-1' shows it again, 'buildsvc builds logs b-1' its logs"

// A build that fails ends the CreateImage stream with the BuildError event
// and then an error status saying the same: the command exits as for any
// failed build, says the error once, and before it the reason, the step
// and its last lines (on plain and tty displays; quiet and rawjson are as
// they were, and -o json's stdout has the new fields).
func TestBuildFailureSummary(t *testing.T) {
	for _, mode := range []string{"plain", "quiet", "rawjson", "json"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"build", "--server", compileFailure(t).start(t), "--progress", mode}
			if mode == "json" {
				args = []string{"build", "--server", compileFailure(t).start(t), "--progress", "quiet", "-o", "json"}
			}
			r := runCLI(t, append(args, buildArgs...)...)
			if r.code != exitFailed || lastLine(r.stderr) != failureLine {
				t.Fatalf("exit code %d, last stderr line %q; want 1 and %q\nstderr:\n%s", r.code, lastLine(r.stderr), failureLine, r.stderr)
			}
			if n := strings.Count(r.stderr, "error: "); n != 1 {
				t.Errorf("%d error lines, want 1:\n%s", n, r.stderr)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			switch mode {
			case "plain":
				if len(lines) < 4 || strings.Join(lines[len(lines)-4:len(lines)-1], "\n") != strings.Join(summaryLines, "\n") {
					t.Errorf("stderr does not end with the summary and the error:\n%s", r.stderr)
				}
			case "quiet":
				if r.stderr != failureLine+"\n" {
					t.Errorf("stderr %q, want the error alone", r.stderr)
				}
			case "rawjson":
				wantJSONLines(t, r.stderr)
				if strings.Contains(r.stderr, summaryLines[0]) {
					t.Errorf("rawjson stderr has the summary:\n%s", r.stderr)
				}
			case "json":
				evs := jsonEvents(t, r.stdout)
				if be := evs[len(evs)-1].GetError(); be.GetReason() != "COMPILE_ERROR" || be.GetStep() != "go build ./cmd/app" || be.GetExitCode() != 1 || len(be.GetLogTail()) != 2 {
					t.Errorf("last JSON event %v, want the BuildError with its reason, step, exit code and tail", evs[len(evs)-1])
				}
				if r.stderr != failureLine+"\n" {
					t.Errorf("stderr %q, want the error alone", r.stderr)
				}
			}
		})
	}
}

// On a terminal the summary comes after the display, before the error.
func TestBuildFailureSummaryOnTTY(t *testing.T) {
	term := newTerminal(t)
	addr := compileFailure(t).start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout syncBuffer
	code := run(ctx, append([]string{"buildsvc", "build", "--server", addr, "--progress", "tty"}, buildArgs...), &stdout, term.tty)
	out := term.close()
	want := strings.Join(append(summaryLines, failureLine), "\r\n") + "\r\n"
	if code != exitFailed || !strings.HasSuffix(out, want) {
		t.Errorf("exit code %d; want 1 and the terminal to end with\n%q\nterminal:\n%q", code, want, out)
	}
}

func TestFailureSummary(t *testing.T) {
	tests := []struct {
		name string
		berr *buildv1.BuildError
		want []string
	}{
		{"a step with output", compileError(), summaryLines},
		{"no step", &buildv1.BuildError{Reason: "TIMEOUT", Message: "the build timed out after 1m"}, []string{"build b-1: TIMEOUT"}},
		{"a step without output", &buildv1.BuildError{Reason: "PUSH_FAILED", Step: "exporting to image"}, []string{`build b-1: PUSH_FAILED in step "exporting to image"`}},
		{"a step, no reason", &buildv1.BuildError{Step: "go build .", ExitCode: 2}, []string{`build b-1: failed in step "go build ." (exit code 2)`}},
		{"neither", &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureSummary("b-1", tt.berr); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("failureSummary = %q, want %q", got, tt.want)
			}
		})
	}
}

// builds get shows the reason, the step, its exit code and its last lines.
func TestGetShowsTheFailure(t *testing.T) {
	berr := compileError()
	berr.LogTail = append(berr.LogTail, "\tnote:\tindented")
	addr := (&fakeServer{info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_FAILED, Error: berr}}).start(t)
	r := runCLI(t, "builds", "get", "--server", addr, "b-1")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"error      " + compileMessage + " (Unknown)\n",
		"reason     COMPILE_ERROR\n",
		"step       go build ./cmd/app\n",
		"exit code  1\n",
		"output     # example.com/app\n",
		"output     ./main.go:7:2: undefined: undefinedThing\n",
		"output         note:    indented\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
}
