package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The calls end as the API says, on the fake BuildKit: CreateImage of a
// build that fails ends with its BuildError event and then its status,
// with the BuildError and an ErrorInfo as details; the record has the same
// error; WatchBuild of it ends OK; a refused request has a BadRequest.
func TestCallsEndWithTheBuildsError(t *testing.T) {
	tests := []struct {
		name   string
		fake   func(*fakeBuildKit)
		code   codes.Code
		reason string
		step   string
		exit   int32
		tail   string // a line of the log tail
	}{
		{"a compile error", func(f *fakeBuildKit) {
			f.fail = func(string, int) error { return exitError(compileDigest, 1) }
			f.output = func(string, int) string { return compilerOutput }
		}, codes.Unknown, reasonCompile, compileName, 1, "./main.go:7:2: undefined: undefinedThing"},
		{"buildkitd drops the solve", func(f *fakeBuildKit) {
			f.fail = func(string, int) error { return status.Error(codes.Unavailable, "error reading from server: EOF") }
		}, codes.Unavailable, reasonBuilderLost, compileName, 0, ""},
		{"buildkitd cannot be reached", func(f *fakeBuildKit) {
			f.listErr = status.Error(codes.Unavailable, "connection refused")
		}, codes.Unavailable, reasonBuilderUnavailable, "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fk := newFakeBuildKit()
			tt.fake(fk)
			e := newLifecycleServer(t, fk, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			w := &watchStream{ctx: ctx}
			err := e.s.CreateImage(imageRequest("v1"), w)
			if len(w.sent) == 0 {
				t.Fatalf("no events; %v", err)
			}
			last := w.sent[len(w.sent)-1].GetError()
			if last == nil {
				t.Fatalf("the last event is %v, want the error", w.sent[len(w.sent)-1])
			}
			if last.GetReason() != tt.reason || last.GetStep() != tt.step || last.GetExitCode() != tt.exit || codes.Code(last.GetCode()) != tt.code {
				t.Errorf("BuildError %v, want reason %s, step %q, exit code %d, code %v", last, tt.reason, tt.step, tt.exit, tt.code)
			}
			if tt.tail != "" && !slices.Contains(last.GetLogTail(), tt.tail) {
				t.Errorf("log tail %q lacks %q", last.GetLogTail(), tt.tail)
			}
			st, be, info, _ := statusDetails(t, err)
			if st.Code() != tt.code || st.Message() != last.GetMessage() || !proto.Equal(be, last) {
				t.Errorf("CreateImage ended %v %q with BuildError %v; want the last event's code, message and error %v", st.Code(), st.Message(), be, last)
			}
			id := w.sent[0].GetBuildId()
			if info.GetReason() != tt.reason || info.GetDomain() != ErrorDomain || info.GetMetadata()["build_id"] != id || info.GetMetadata()["step"] != tt.step {
				t.Errorf("ErrorInfo %v, want reason %s, build %s, step %q", info, tt.reason, id, tt.step)
			}
			if rec := e.get(t, id); !proto.Equal(rec.GetError(), last) {
				t.Errorf("the record's error %v, want %v", rec.GetError(), last)
			}
			ww := &watchStream{ctx: ctx}
			if err := e.s.WatchBuild(&buildv1.WatchBuildRequest{BuildId: id}, ww); err != nil || len(ww.sent) != len(w.sent) {
				t.Errorf("WatchBuild of the failed build: %v after %d events, want OK after %d", err, len(ww.sent), len(w.sent))
			}
		})
	}

	e := newLifecycleServer(t, newFakeBuildKit(), nil)
	req := imageRequest("v1")
	req.ImageTag = "Not A Reference"
	err := e.s.CreateImage(req, &watchStream{ctx: context.Background()})
	st, _, info, bad := statusDetails(t, err)
	if st.Code() != codes.InvalidArgument || info.GetReason() != reasonInvalidArgument ||
		len(bad.GetFieldViolations()) != 1 || bad.GetFieldViolations()[0].GetField() != "image_tag" {
		t.Errorf("a bad image_tag: %v %q, ErrorInfo %v, BadRequest %v; want InvalidArgument naming image_tag", st.Code(), st.Message(), info, bad)
	}
}
