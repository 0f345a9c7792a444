package main

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// wantJSONLines checks that every line of stderr but a final "error: "
// line is JSON, and returns the command's own lines ({"buildId", "message"}).
func wantJSONLines(t *testing.T, stderr string) []map[string]string {
	t.Helper()
	var own []map[string]string
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	for i, line := range lines {
		if i == len(lines)-1 && strings.HasPrefix(line, "error: ") {
			break
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("stderr line %d is not JSON: %q", i+1, line)
			continue
		}
		if id, ok := m["buildId"].(string); ok {
			msg, _ := m["message"].(string)
			own = append(own, map[string]string{"buildId": id, "message": msg})
		}
	}
	return own
}

// jsonEvents parses stdout as one BuildEvent a line.
func jsonEvents(t *testing.T, stdout string) []*buildv1.BuildEvent {
	t.Helper()
	var evs []*buildv1.BuildEvent
	for _, line := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		e := &buildv1.BuildEvent{}
		if err := protojson.Unmarshal([]byte(line), e); err != nil {
			t.Fatalf("stdout line is not a BuildEvent: %v\n%q", err, line)
		}
		evs = append(evs, e)
	}
	return evs
}

func failedEvents() []*buildv1.BuildEvent {
	return append(successEvents()[:6],
		stateEv(buildv1.BuildState_BUILD_STATE_FAILED, ""),
		&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}}},
	)
}

// Every progress mode names the build: when it starts (but quiet), and in
// the last line of a failure, with the commands to see it again and its
// logs. (tty_test.go has the tty.)
func TestBuildIDShown(t *testing.T) {
	const failure = "error: go build: exit code 1 (build b-1); 'buildsvc builds watch b-1' shows it again, 'buildsvc builds logs b-1' its logs"
	for _, mode := range []string{"plain", "rawjson", "quiet"} {
		t.Run(mode, func(t *testing.T) {
			ok := runCLI(t, append([]string{"build", "--server", (&fakeServer{events: successEvents()}).start(t), "--progress", mode}, buildArgs...)...)
			failed := runCLI(t, append([]string{"build", "--server", (&fakeServer{events: failedEvents()}).start(t), "--progress", mode}, buildArgs...)...)
			if ok.code != exitOK || ok.stdout != testImage+"\n" {
				t.Fatalf("success: exit code %d, stdout %q\nstderr:\n%s", ok.code, ok.stdout, ok.stderr)
			}
			if failed.code != exitFailed || failed.stdout != "" || lastLine(failed.stderr) != failure {
				t.Errorf("failure: exit code %d, stdout %q, last stderr line %q; want 1, nothing and %q", failed.code, failed.stdout, lastLine(failed.stderr), failure)
			}
			switch mode {
			case "plain":
				for _, r := range []result{ok, failed} {
					if first, _, _ := strings.Cut(r.stderr, "\n"); first != "build b-1: started" {
						t.Errorf("first stderr line %q, want the build's id\n%s", first, r.stderr)
					}
				}
			case "rawjson":
				for _, r := range []result{ok, failed} {
					own := wantJSONLines(t, r.stderr)
					if len(own) != 1 || own[0]["buildId"] != "b-1" || own[0]["message"] != "build b-1: started" || !strings.HasPrefix(r.stderr, `{"buildId":"b-1"`) {
						t.Errorf("the command's own JSON lines are %v, want the start first\n%s", own, r.stderr)
					}
				}
			case "quiet":
				if ok.stderr != "" || failed.stderr != failure+"\n" {
					t.Errorf("stderr %q on success, %q on failure; want nothing and the error", ok.stderr, failed.stderr)
				}
			}
		})
	}
}

// A build whose outcome is unknown (the stream ended early) names the
// build, and says it may still run.
func TestBuildIDShownUnknownOutcome(t *testing.T) {
	r := runCLI(t, append([]string{"build", "--server", (&fakeServer{events: successEvents()[:4]}).start(t), "--progress", "quiet"}, buildArgs...)...)
	want := "error: build: event stream ended before the build did (build b-1); it may still be running: 'buildsvc builds watch b-1' reattaches, 'buildsvc builds logs b-1' shows its logs\n"
	if r.code != exitFailed || r.stderr != want {
		t.Errorf("exit code %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

// --output json: stdout is the build's events, one protojson BuildEvent a
// line, each once even across a reattach, and nothing else; the exit code is
// the build's.
func TestBuildOutputJSON(t *testing.T) {
	tests := []struct {
		name     string
		server   *fakeServer
		want     int // events
		wantCode int
	}{
		{"success", &fakeServer{events: successEvents()}, len(successEvents()), exitOK},
		{"failure", &fakeServer{events: failedEvents()}, len(failedEvents()), exitFailed},
		{"reattached", &fakeServer{events: loggedEvents(), breaks: map[int]int{0: 5, 1: 4}, overlap: 2}, len(loggedEvents()), exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, append([]string{"build", "--server", tt.server.start(t), "--output", "json", "--progress", "plain"}, buildArgs...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit code %d, want %d\nstderr:\n%s", r.code, tt.wantCode, r.stderr)
			}
			evs := jsonEvents(t, r.stdout)
			if len(evs) != tt.want {
				t.Fatalf("%d events on stdout, want %d\n%s", len(evs), tt.want, r.stdout)
			}
			for i, e := range evs {
				if e.GetBuildId() != "b-1" || e.GetSeq() != uint64(i+1) {
					t.Errorf("event %d is build %q seq %d, want b-1 seq %d", i, e.GetBuildId(), e.GetSeq(), i+1)
				}
			}
			last := evs[len(evs)-1]
			if tt.wantCode == exitOK && last.GetResult().GetImage() != testImage || tt.wantCode != exitOK && last.GetError() == nil {
				t.Errorf("last event %v, want the outcome", last)
			}
			if !strings.Contains(r.stderr, "build b-1: started") {
				t.Errorf("the progress is not on stderr:\n%s", r.stderr)
			}
		})
	}
	r := runCLI(t, append([]string{"build", "--server", "127.0.0.1:1", "--output", "yaml"}, buildArgs...)...)
	if r.code != exitUsage || !strings.Contains(r.stderr, `--output "yaml"`) {
		t.Errorf("--output yaml: exit code %d, stderr %q; want 2", r.code, r.stderr)
	}
}

func TestBuildDetachJSON(t *testing.T) {
	f := &fakeServer{started: &buildv1.StartBuildResponse{BuildId: "b-7", Joined: true}}
	r := runCLI(t, append([]string{"build", "--server", f.start(t), "-d", "-o", "json"}, buildArgs...)...)
	if r.code != exitOK || r.stdout != `{"buildId":"b-7","joined":true}`+"\n" {
		t.Errorf("exit code %d, stdout %q; want 0 and the response as a line of JSON\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// The build command's help ends with examples, each of which runs (up to
// its first pipe) against a fake server, and every flag that takes a value
// names it.
func TestBuildHelp(t *testing.T) {
	r := runCLI(t, "build", "--help")
	if r.code != exitOK {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	examples := helpExamples(t, r.stdout)
	if n := len(examples); n < 2 || n > 3 {
		t.Errorf("%d examples, want 2 or 3:\n%s", n, r.stdout)
	}
	f := &fakeServer{events: successEvents(), started: &buildv1.StartBuildResponse{BuildId: "b-1"}}
	addr := f.start(t)
	for _, ex := range examples {
		line, _, _ := strings.Cut(ex[1], " | ")
		words := shellWords(t, line)
		if len(words) < 2 || words[0] != "buildsvc" || words[1] != "build" {
			t.Errorf("example %q is not a build command line", ex[1])
			continue
		}
		if r := runCLI(t, append([]string{"build", "--server", addr}, words[2:]...)...); r.code != exitOK {
			t.Errorf("example %q (%s): exit code %d\nstderr:\n%s", line, ex[0], r.code, r.stderr)
		}
	}
	for _, want := range []string{"--timeout DURATION ", "--output FORMAT, -o FORMAT ", "--progress MODE "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the help lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, " value ") {
		t.Errorf("a flag's value has no name:\n%s", r.stdout)
	}
}
