package server

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func vertexEvent(digest, name, errText string, done bool) *buildv1.BuildEvent {
	v := &buildv1.Vertex{Digest: digest, Name: name, Error: errText}
	if done {
		v.Completed = timestamp(fixedTime)
	}
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: v}}
}

func TestCompileMissedModules(t *testing.T) {
	missing := "go: example.com/x@v1.0.0: module lookup disabled by GOPROXY=off\n"
	tests := []struct {
		name string
		evs  []*buildv1.BuildEvent
		want bool
	}{
		{"the compile step lacked a module", []*buildv1.BuildEvent{
			vertexEvent("c", "go build .", "", false), chunk("c", 2, missing), vertexEvent("c", "go build .", "exit code: 1", true),
		}, true},
		{"the same text from the download step", []*buildv1.BuildEvent{
			vertexEvent("d", "go mod download", "", false), chunk("d", 2, missing),
			vertexEvent("c", "go build .", "", false), chunk("c", 2, "x.go:1: syntax error\n"), vertexEvent("c", "go build .", "exit code: 1", true),
		}, false},
		{"a compile error", []*buildv1.BuildEvent{
			vertexEvent("c", "go build ./cmd/app", "", false), chunk("c", 2, "undefined: x\n"), vertexEvent("c", "go build ./cmd/app", "exit code: 1", true),
		}, false},
		{"the compile step tried to download into the read-only cache", []*buildv1.BuildEvent{
			vertexEvent("c", "go build .", "", false), chunk("c", 2, "go: downloading github.com/google/uuid v1.6.0\nmain.go:10:2: mkdir /go/pkg/mod/cache: read-only file system\n"),
			vertexEvent("c", "go build .", "exit code: 1", true),
		}, true},
		{"the download step could not reach a private module's host", []*buildv1.BuildEvent{
			vertexEvent("d", "go mod download", "", false), chunk("d", 2, "go: 127.0.0.1/privmod.git@v1.0.0: no secure protocol found for repository\n"),
			vertexEvent("c", "go build .", "", false), chunk("c", 2, "go: downloading 127.0.0.1/privmod.git v1.0.0\n"),
			vertexEvent("c", "go build .", "exit code: 1", true),
		}, false},
	}
	for _, tt := range tests {
		l := newEventLog("b", redactor{}, 0)
		l.append(chunk("x", 1, "before the attempt: "+missing))
		first, _ := l.stats()
		for _, e := range tt.evs {
			l.append(e)
		}
		if got := compileMissedModules(l, first); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Builds that failed on one generation move it once.
func TestModulesGeneration(t *testing.T) {
	s := &Server{modGen: map[string]int64{}}
	k := modulesKey("a", "")
	if g := s.modulesGeneration(k); g != 0 {
		t.Fatalf("first generation %d", g)
	}
	g1 := s.nextModulesGeneration(k, 0)
	if g1 == 0 || s.modulesGeneration(k) != g1 {
		t.Errorf("next = %d, then %d", g1, s.modulesGeneration(k))
	}
	if g := s.nextModulesGeneration(k, 0); g != g1 {
		t.Errorf("a second build that failed on 0 moved it again, to %d", g)
	}
	if g := s.nextModulesGeneration(k, g1); g == g1 || g == 0 {
		t.Errorf("a build that failed on %d left it at %d", g1, g)
	}
	if g := s.modulesGeneration(modulesKey("b", "")); g != 0 {
		t.Errorf("another tenant's generation moved to %d", g)
	}
}

func TestExplainDownload(t *testing.T) {
	cause := errors.New(`process "go build ." did not complete successfully`)
	l := newEventLog("b", redactor{}, 0)
	l.append(vertexEvent("d", "go mod download", "", false))
	if err := explainDownload(cause, l, 0); err != cause {
		t.Errorf("a download without the failure: %v", err)
	}
	l.append(chunk("d", 2, "go: 127.0.0.1/privmod.git@v1.0.0: no secure protocol found for repository\n"))
	err := explainDownload(cause, l, 0)
	if !errors.Is(err, cause) || errorCode(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ca-bundle") {
		t.Errorf("explained: %v (code %v)", err, errorCode(err))
	}
}
