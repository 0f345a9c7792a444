//go:build integration

package integration

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// details returns the BuildError, ErrorInfo and BadRequest details of st.
func details(t testing.TB, st *status.Status) (*buildv1.BuildError, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	t.Helper()
	var (
		be   *buildv1.BuildError
		info *errdetails.ErrorInfo
		bad  *errdetails.BadRequest
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *buildv1.BuildError:
			be = d
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		case error:
			t.Errorf("a detail of the status does not decode: %v", d)
		}
	}
	return be, info, bad
}

// compilerLine is the compiler's error of broken.go below:
// file.go:LINE:COL: message.
var compilerLine = regexp.MustCompile(`broken\.go:3:\d+: undefined: undefinedThing`)

// A main package that does not compile fails the build with COMPILE_ERROR:
// the CreateImage stream ends with the BuildError event and then with an
// error status whose code is the BuildError's and whose details are the
// BuildError (the go build step, exit code 1, the compiler's line in its
// last lines of output) and an ErrorInfo; GetBuild's record has the same
// error, and WatchBuild of the ended build ends OK.
func TestCompileErrorDetails(t *testing.T) {
	c := startServer(t, nil)
	files := sampleFiles(t)
	files["broken.go"] = "package main\n\nfunc broken() { undefinedThing() }\n"
	repo := newRepo(t, files)

	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "broken")})
	if len(o.events) == 0 {
		t.Fatalf("no events; stream status %v", o.err)
	}
	last := o.events[len(o.events)-1].GetError()
	if last == nil {
		t.Fatalf("the last event is %v, want the BuildError", o.events[len(o.events)-1])
	}
	if last.GetReason() != "COMPILE_ERROR" || !strings.HasPrefix(last.GetStep(), "go build") || last.GetExitCode() != 1 {
		t.Errorf("BuildError reason %q, step %q, exit code %d; want COMPILE_ERROR, the go build step and 1\n%v",
			last.GetReason(), last.GetStep(), last.GetExitCode(), last)
	}
	if !tailHas(last.GetLogTail(), compilerLine) {
		t.Errorf("log tail %q lacks the compiler's line %s\nlogs:\n%s", last.GetLogTail(), compilerLine, o.logs())
	}
	t.Logf("BuildError: %v", last)
	if len(last.GetLogTail()) > 20 {
		t.Errorf("log tail of %d lines, want at most 20", len(last.GetLogTail()))
	}

	st, ok := status.FromError(o.err)
	if !ok || o.err == nil {
		t.Fatalf("stream status %v, want the build's error", o.err)
	}
	if st.Code() != codes.Code(last.GetCode()) || st.Message() != last.GetMessage() {
		t.Errorf("status %v %q, want the BuildError's code %v and message %q", st.Code(), st.Message(), codes.Code(last.GetCode()), last.GetMessage())
	}
	be, info, bad := details(t, st)
	if !proto.Equal(be, last) {
		t.Errorf("the status's BuildError detail\n%v\nis not the BuildError event\n%v", be, last)
	}
	id := o.events[0].GetBuildId()
	if info.GetReason() != "COMPILE_ERROR" || info.GetDomain() != server.ErrorDomain ||
		info.GetMetadata()["step"] != last.GetStep() || info.GetMetadata()["exit_code"] != "1" || info.GetMetadata()["build_id"] != id {
		t.Errorf("ErrorInfo %v, want reason COMPILE_ERROR, domain %s, the step, exit code 1 and build %s", info, server.ErrorDomain, id)
	}
	if bad != nil {
		t.Errorf("a failed build's status has a BadRequest: %v", bad)
	}

	rec, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	if rec.GetState() != buildv1.BuildState_BUILD_STATE_FAILED || !proto.Equal(rec.GetError(), last) {
		t.Errorf("GetBuild: state %v, error\n%v\nwant FAILED and the BuildError event\n%v", rec.GetState(), rec.GetError(), last)
	}

	stream, err := c.WatchBuild(t.Context(), &buildv1.WatchBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("WatchBuild of a failed build ended with %v after %d events, want OK", err, n)
		}
		n++
	}
	if n != len(o.events) {
		t.Errorf("WatchBuild sent %d events, CreateImage %d", n, len(o.events))
	}
}

func tailHas(tail []string, re *regexp.Regexp) bool {
	for _, l := range tail {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// A field that is not valid is refused before queueing with a BadRequest
// naming it and an ErrorInfo with reason INVALID_ARGUMENT.
func TestRefusalDetails(t *testing.T) {
	c := startServer(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stream, err := c.CreateImage(ctx, &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "Not A Reference"})
	if err == nil {
		_, err = stream.Recv()
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("status %v %q, want InvalidArgument", st.Code(), st.Message())
	}
	be, info, bad := details(t, st)
	if be != nil {
		t.Errorf("a refusal carries a BuildError: %v", be)
	}
	if v := bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "image_tag" || v[0].GetDescription() == "" {
		t.Errorf("BadRequest %v, want one violation of image_tag with a description", bad)
	}
	if info.GetReason() != "INVALID_ARGUMENT" || info.GetDomain() != server.ErrorDomain || info.GetMetadata()["field"] != "image_tag" {
		t.Errorf("ErrorInfo %v, want INVALID_ARGUMENT of %s naming image_tag", info, server.ErrorDomain)
	}
}
