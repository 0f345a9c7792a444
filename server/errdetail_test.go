package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/grpcerrors"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var tStepTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Digests of the steps of the logs below.
var (
	tGitDigest      = digest.FromString("git").String()
	tImageDigest    = digest.FromString("image").String()
	tDownloadDigest = digest.FromString("download").String()
	tCompileDigest  = digest.FromString("compile").String()
	tExportDigest   = digest.FromString("export").String()
)

// stepEvents is the log of a step: it starts, prints out, and completes
// with errMsg (empty: it succeeded).
func stepEvents(dgst, name, out, errMsg string) []*buildv1.BuildEvent {
	evs := []*buildv1.BuildEvent{{Event: &buildv1.BuildEvent_Vertex{Vertex: &buildv1.Vertex{Digest: dgst, Name: name}}}}
	if out != "" {
		evs = append(evs, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Vertex: dgst, Stream: 2, Data: []byte(out)}}})
	}
	done := &buildv1.Vertex{Digest: dgst, Name: name, Error: errMsg, Started: timestamp(tStepTime), Completed: timestamp(tStepTime)}
	return append(evs, &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Vertex{Vertex: done}})
}

func stateEvent(s buildv1.BuildState) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: s}}}
}

// runLog is the log of a build that got as far as the steps given.
func runLog(steps ...[]*buildv1.BuildEvent) []*buildv1.BuildEvent {
	evs := []*buildv1.BuildEvent{stateEvent(buildv1.BuildState_BUILD_STATE_QUEUED), stateEvent(buildv1.BuildState_BUILD_STATE_BUILDING)}
	evs = append(evs, stepEvents(tGitDigest, "git git://h/app.git@1a2b3c4d5e6f", "", "")...)
	for _, s := range steps {
		evs = append(evs, s...)
	}
	return evs
}

// fromBuildKit is err as BuildKit's client returns it: buildkitd turns its
// error into a status with the typed errors as details
// (grpcerrors.ToGRPC), the client turns the status back into typed errors
// (grpcerrors.FromGRPC), and the server wraps that as solve does.
func fromBuildKit(err error) error {
	return fmt.Errorf("solve: %w", grpcerrors.FromGRPC(grpcerrors.ToGRPC(context.Background(), err)))
}

// execFailed is buildkitd's error of an exec op of args that exited with
// code, in step dgst: the executor's ExitError, wrapped with the op and
// the vertex, as the solver does.
func execFailed(dgst string, code uint32, args ...string) error {
	err := fmt.Errorf("process %q did not complete successfully: %w", strings.Join(args, " "), &gatewaypb.ExitError{ExitCode: code})
	op := &pb.Op{Op: &pb.Op_Exec{Exec: &pb.ExecOp{Meta: &pb.Meta{Args: args}}}}
	err = errdefs.WithOp(err, op, nil)
	err = errdefs.WithSolveError(err, nil, nil, nil)
	return errdefs.WrapVertex(err, digest.Digest(dgst))
}

const compilerOutput = "# example.com/app\n./main.go:7:2: undefined: undefinedThing\n"

func TestClassify(t *testing.T) {
	compileLog := runLog(
		stepEvents(tDownloadDigest, "go mod download", "", ""),
		stepEvents(tCompileDigest, "go build .", compilerOutput, "exit code: 1"),
	)
	compileErr := fromBuildKit(execFailed(tCompileDigest, 1, "go", "build", "-trimpath", "-o", "/out/app", "."))
	pushLog := append(runLog(stepEvents(tCompileDigest, "go build .", "", "")),
		stateEvent(buildv1.BuildState_BUILD_STATE_PUSHING))
	pushLog = append(pushLog, stepEvents(tExportDigest, "exporting to image", "", "failed")...)
	tests := []struct {
		name     string
		err      error
		evs      []*buildv1.BuildEvent
		state    buildv1.BuildState
		want     *buildv1.BuildError // Message is not compared
		wantTail string              // a line of the tail; no tail if empty
	}{{
		name:     "a compile error",
		err:      compileErr,
		evs:      compileLog,
		want:     &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonCompile, Step: "go build .", ExitCode: 1},
		wantTail: "./main.go:7:2: undefined: undefinedThing",
	}, {
		// BuildKit's error names the vertex that failed: a later one that
		// reported an error too is not the step.
		name: "the vertex the error names",
		err:  compileErr,
		evs:  append(slices.Clone(compileLog), stepEvents(tExportDigest, "copy app", "", "cancelled")...),
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonCompile, Step: "go build .", ExitCode: 1},
	}, {
		// Without the log, the op in the error still says what failed.
		name: "a compile error, no log of it",
		err:  compileErr,
		evs:  runLog(),
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonCompile, ExitCode: 1},
	}, {
		name: "go build without the modules it needs",
		err:  compileErr,
		evs: runLog(stepEvents(tCompileDigest, "go build .",
			"go: downloading example.com/dep v1.0.0\nmain.go:3:8: example.com/dep@v1.0.0: module lookup disabled by GOPROXY=off\n", "exit code: 1")),
		want:     &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonDownload, Step: "go build .", ExitCode: 1},
		wantTail: "main.go:3:8: example.com/dep@v1.0.0: module lookup disabled by GOPROXY=off",
	}, {
		name:     "go mod download killed",
		err:      fromBuildKit(execFailed(tDownloadDigest, 137, "go", "mod", "download")),
		evs:      runLog(stepEvents(tDownloadDigest, "go mod download", "go: downloading example.com/dep v1.0.0\n", "exit code: 137")),
		want:     &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonDownload, Step: "go mod download", ExitCode: 137},
		wantTail: "go: downloading example.com/dep v1.0.0",
	}, {
		name: "a private module's host out of reach",
		err:  errPrivateModuleUnreachable{compileErr},
		evs:  compileLog,
		want: &buildv1.BuildError{Code: int32(codes.FailedPrecondition), Reason: reasonDownload, Step: "go build .", ExitCode: 1},
	}, {
		name: "buildkitd gone after the solve began",
		err:  fmt.Errorf("solve: %w", status.Error(codes.Unavailable, "error reading from server: EOF")),
		evs:  runLog(stepEvents(tCompileDigest, "go build .", "", "")),
		want: &buildv1.BuildError{Code: int32(codes.Unavailable), Reason: reasonBuilderLost},
	}, {
		name: "buildkitd's connection cut",
		err:  fmt.Errorf("receive status: %w", io.ErrUnexpectedEOF),
		evs:  runLog(),
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonBuilderLost},
	}, {
		name: "buildkitd never reached",
		err:  fmt.Errorf("%w: %w", errBuildkitUnavailable, status.Error(codes.Unavailable, "connection refused")),
		evs:  runLog(),
		want: &buildv1.BuildError{Code: int32(codes.Unavailable), Reason: reasonBuilderUnavailable},
	}, {
		// The step the timeout stopped is named.
		name:     "the build's time ran out",
		err:      timeoutCause(t),
		evs:      runLog(stepEvents(tCompileDigest, "go build .", compilerOutput, "context canceled")),
		want:     &buildv1.BuildError{Code: int32(codes.DeadlineExceeded), Reason: reasonTimeout, Step: "go build ."},
		wantTail: "./main.go:7:2: undefined: undefinedThing",
	}, {
		name: "a deadline of BuildKit's",
		err:  fmt.Errorf("solve: %w", context.DeadlineExceeded),
		evs:  runLog(),
		want: &buildv1.BuildError{Code: int32(codes.DeadlineExceeded), Reason: reasonTimeout},
	}, {
		name:  "cancelled",
		err:   errCancelled,
		evs:   runLog(stepEvents(tDownloadDigest, "go mod download", "", "")),
		state: buildv1.BuildState_BUILD_STATE_CANCELLED,
		want:  &buildv1.BuildError{Code: int32(codes.Canceled), Reason: reasonCancelled},
	}, {
		name:  "the server stopped",
		err:   errShutdown,
		evs:   runLog(),
		state: buildv1.BuildState_BUILD_STATE_INTERRUPTED,
		want:  &buildv1.BuildError{Code: int32(codes.Unavailable), Reason: reasonInterrupted},
	}, {
		name: "the history store failed",
		err:  errHistoryWrite{errors.New("disk full")},
		evs:  runLog(),
		want: &buildv1.BuildError{Code: int32(codes.Unavailable), Reason: reasonHistoryUnavailable},
	}, {
		name: "the registry refused the push's credentials",
		err:  errors.New(`failed to push r/app:v1: unexpected status from HEAD request to http://r/v2/app/blobs/sha256:1: 401 Unauthorized`),
		evs:  pushLog,
		want: &buildv1.BuildError{Code: int32(codes.Unauthenticated), Reason: reasonRegistryAuth, Step: "exporting to image"},
	}, {
		name: "the registry denied the push",
		err:  errors.New("push: denied: requested access to the resource is denied"),
		evs:  pushLog,
		want: &buildv1.BuildError{Code: int32(codes.PermissionDenied), Reason: reasonRegistryAuth, Step: "exporting to image"},
	}, {
		name: "the push failed otherwise",
		err:  errors.New("failed to push r/app:v1: write: connection reset by peer"),
		evs:  pushLog,
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonPushFailed, Step: "exporting to image"},
	}, {
		name: "the builder image does not exist",
		err:  errors.New("builder image: resolve r/builder:1: r/builder:1: not found"),
		evs:  runLog(stepEvents(tImageDigest, imageStepPrefix+"r/builder:1", "", "r/builder:1: not found")),
		want: &buildv1.BuildError{Code: int32(codes.NotFound), Reason: reasonBaseNotFound, Step: imageStepPrefix + "r/builder:1"},
	}, {
		name: "the git host wants credentials",
		err:  errors.New("failed to fetch remote https://h/app.git: authentication required"),
		evs: append(runLog()[:2], stepEvents(tGitDigest, "git https://h/app.git@1a2b3c4d5e6f",
			"fatal: Authentication failed for 'https://h/app.git/'\n", "authentication required")...),
		want:     &buildv1.BuildError{Code: int32(codes.Unauthenticated), Reason: reasonGitAuth, Step: "git https://h/app.git@1a2b3c4d5e6f"},
		wantTail: "fatal: Authentication failed for 'https://h/app.git/'",
	}, {
		name: "the git fetch failed",
		err:  errors.New("failed to fetch remote git://h/app.git: exit status 128"),
		evs:  append(runLog()[:2], stepEvents(tGitDigest, "git git://h/app.git@1a2b3c4d5e6f", "fatal: remote error: not our ref\n", "exit status 128")...),
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonGitUnavailable, Step: "git git://h/app.git@1a2b3c4d5e6f"},
	}, {
		// Of a long output only the end is read.
		name: "a compile error after much output",
		err:  compileErr,
		evs: runLog(stepEvents(tCompileDigest, "go build .",
			strings.Repeat("# a long line of output from the compiler\n", 4<<10)+compilerOutput, "exit code: 1")),
		want:     &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonCompile, Step: "go build .", ExitCode: 1},
		wantTail: "./main.go:7:2: undefined: undefinedThing",
	}, {
		name: "a copy failed",
		err:  errors.New("copy app: no such file"),
		evs:  runLog(stepEvents(tExportDigest, "copy app", "", "no such file")),
		want: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: reasonInternal, Step: "copy app"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, got := endOfRun(tt.err, logOf(tt.evs))
			if tt.state == buildv1.BuildState_BUILD_STATE_UNSPECIFIED {
				tt.state = buildv1.BuildState_BUILD_STATE_FAILED
			}
			if state != tt.state {
				t.Errorf("state %v, want %v", state, tt.state)
			}
			if got.GetMessage() != tt.err.Error() {
				t.Errorf("message %q, want the error's, %q", got.GetMessage(), tt.err.Error())
			}
			tail := got.GetLogTail()
			got = proto.CloneOf(got)
			got.Message, got.LogTail = "", nil
			if !proto.Equal(got, tt.want) {
				t.Errorf("classify = %v, want %v", got, tt.want)
			}
			if tt.wantTail == "" && tt.want.Step == "" && len(tail) > 0 {
				t.Errorf("log tail %q without a step", tail)
			}
			if tt.wantTail != "" && !slices.Contains(tail, tt.wantTail) {
				t.Errorf("log tail %q lacks %q", tail, tt.wantTail)
			}
		})
	}
}

// timeoutCause is what run gets from its context when the build's time
// runs out: the context's cause.
func timeoutCause(t *testing.T) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), time.Nanosecond, errTimeout{after: time.Nanosecond})
	defer cancel()
	<-ctx.Done()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	t.Fatal("no cause")
	return nil
}

// logOf is an event log holding evs.
func logOf(evs []*buildv1.BuildEvent) *eventLog {
	l := newEventLog("b", newRedactor(nil), 0)
	for _, e := range evs {
		l.append(proto.CloneOf(e))
	}
	return l
}

// Refusals before queueing and builds that never ran have reasons too.
func TestClassifyRefusals(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fieldErr("image_tag", "bad"), reasonInvalidArgument},
		{fmt.Errorf("git_commit: %w", fmt.Errorf("%q: %w", "nope", ErrRefNotFound)), reasonGitNotFound},
		{&notFoundField{"base_image", "r/base:1 does not exist in its registry"}, reasonBaseNotFound},
		{&notFoundField{"builder_image", "r/builder:1 does not exist in its registry"}, reasonBaseNotFound},
		{fmt.Errorf("git_repo: %w: the remote has no such repository", &resolveError{&egress.Failure{Kind: egress.KindNotFound}}), reasonGitNotFound},
		{fmt.Errorf("git_commit: %w", &resolveError{&egress.Failure{Kind: egress.KindConnRefused}}), reasonGitUnavailable},
		{&gitAuthError{resolveError: &resolveError{&egress.Failure{Kind: egress.KindAuth}}, host: "h"}, reasonGitAuth},
		{errQueueFull, reasonResourceExhausted},
		{errRequestIDReused{id: "r1", build: "b"}, reasonRequestIDReused},
		{errHistoryRead{errors.New("timeout")}, reasonHistoryUnavailable},
		{errShuttingDown, reasonShuttingDown},
		{errNoIdentity, reasonUnauthenticated},
		{errShutdown, reasonInterrupted},
		{errCancelled, reasonCancelled},
		{errors.New("something else"), reasonInternal},
	}
	for _, tt := range tests {
		if got := reasonOf(tt.err, nil); got != tt.want {
			t.Errorf("reasonOf(%v) = %s, want %s", tt.err, got, tt.want)
		}
		if _, be := endOf(tt.err); be.GetReason() != tt.want || be.GetStep() != "" || be.GetExitCode() != 0 {
			t.Errorf("endOf(%v) = %v, want reason %s and no step", tt.err, be, tt.want)
		}
	}
}

func TestLogTail(t *testing.T) {
	var many strings.Builder
	for i := range 30 {
		fmt.Fprintf(&many, "line %d\n", i)
	}
	tests := []struct {
		name string
		out  string
		want []string
	}{
		{"trailing noise", "./a.go:1:1: x\n\n  \n\r\n", []string{"./a.go:1:1: x"}},
		{"colours", "\x1b[31m./a.go:1:1: x\x1b[0m\n", []string{"./a.go:1:1: x"}},
		{"overwritten in place", "50%\r100%\rdone\n", []string{"done"}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"the last 20", many.String(), strings.Split(strings.TrimSpace(many.String()), "\n")[10:]},
		{"no output", "", nil},
		{"a long line", strings.Repeat("é", 300), []string{strings.Repeat("é", 126) + "…"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := logTail([]byte(tt.out), maxTailLines)
			if !slices.Equal(got, tt.want) {
				t.Errorf("logTail(%q) = %q, want %q", tt.out, got, tt.want)
			}
			for _, l := range got {
				if len(l) > maxTailLine {
					t.Errorf("line of %d bytes", len(l))
				}
			}
		})
	}
}

// A build's step and output are masked in its error, like its message.
func TestFailMasksTheTail(t *testing.T) {
	const secret = "s3cret-token-value"
	b := &build{id: "b", state: buildv1.BuildState_BUILD_STATE_BUILDING, stop: make(chan struct{}), creds: &credentials.Build{}}
	b.log = newEventLog("b", newRedactor([]string{secret}), 0)
	b.fail(buildv1.BuildState_BUILD_STATE_FAILED, &buildv1.BuildError{
		Code: int32(codes.Unknown), Message: "x " + secret, Reason: reasonCompile,
		Step: "go build " + secret, LogTail: []string{"./a.go:1:1: " + secret},
	})
	evs, _, _ := b.log.since(0)
	for _, e := range evs {
		if strings.Contains(fmt.Sprint(e), secret) {
			t.Errorf("event shows the secret: %v", e)
		}
	}
	if be := evs[len(evs)-1].GetError(); be == nil || be.GetReason() != reasonCompile || len(be.GetLogTail()) != 1 {
		t.Errorf("last event %v, want the error with its reason and tail", evs[len(evs)-1])
	}
}

// statusDetails returns the details of err's status by type.
func statusDetails(t *testing.T, err error) (*status.Status, *buildv1.BuildError, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a status", err)
	}
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
			t.Errorf("detail: %v", d)
		}
	}
	return st, be, info, bad
}

// A call whose build failed ends with the build's code and message, and
// the BuildError and an ErrorInfo as details.
func TestEndedStatus(t *testing.T) {
	berr := &buildv1.BuildError{Code: int32(codes.Unknown), Message: `process "go build ." did not complete successfully: exit code: 1`,
		Reason: reasonCompile, Step: "go build .", ExitCode: 1, LogTail: []string{"./main.go:7:2: undefined: undefinedThing"}}
	var end buildEnd
	var sent []*buildv1.BuildEvent
	send := end.watch(func(e *buildv1.BuildEvent) error { sent = append(sent, e); return nil })
	for _, e := range []*buildv1.BuildEvent{stateEvent(buildv1.BuildState_BUILD_STATE_FAILED), {Event: &buildv1.BuildEvent_Error{Error: berr}}} {
		if err := send(e); err != nil {
			t.Fatal(err)
		}
	}
	if len(sent) != 2 {
		t.Fatalf("sent %d events, want 2", len(sent))
	}
	st, be, info, bad := statusDetails(t, end.status("b-1"))
	if st.Code() != codes.Unknown || st.Message() != berr.Message {
		t.Errorf("status %v %q, want the build's code and message", st.Code(), st.Message())
	}
	if !proto.Equal(be, berr) {
		t.Errorf("BuildError detail %v, want %v", be, berr)
	}
	wantInfo := &errdetails.ErrorInfo{Reason: reasonCompile, Domain: ErrorDomain,
		Metadata: map[string]string{"build_id": "b-1", "step": "go build .", "exit_code": "1"}}
	if !proto.Equal(info, wantInfo) {
		t.Errorf("ErrorInfo %v, want %v", info, wantInfo)
	}
	if bad != nil {
		t.Errorf("a BadRequest detail on a build's failure: %v", bad)
	}

	if err := (&buildEnd{}).status("b-2"); err != nil {
		t.Errorf("a build without an error event ends the call with %v, want OK", err)
	}
	if st, _, info, _ := statusDetails(t, endedStatus("b-3", &buildv1.BuildError{Message: "x"})); st.Code() != codes.Unknown || info.GetReason() != reasonInternal {
		t.Errorf("a BuildError without code or reason: %v %v, want Unknown and INTERNAL", st.Code(), info)
	}
}

// A refusal before queueing carries an ErrorInfo with its reason and, for
// a field that is not valid, a BadRequest naming the field.
func TestRefusalStatus(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		code      codes.Code
		reason    string
		field     string // of the ErrorInfo's metadata
		violation *errdetails.BadRequest_FieldViolation
	}{
		{"a bad field", fmt.Errorf("check: %w", fieldErr("image_tag", "%q is not a valid image reference", "x y")), codes.InvalidArgument, reasonInvalidArgument, "image_tag",
			&errdetails.BadRequest_FieldViolation{Field: "image_tag", Description: `"x y" is not a valid image reference`}},
		{"a missing base image", &notFoundField{"base_image", "r/base:1 does not exist in its registry"}, codes.NotFound, reasonBaseNotFound, "base_image", nil},
		{"a missing ref", fmt.Errorf("git_commit: %w", fmt.Errorf("%q: %w", "nope", ErrRefNotFound)), codes.NotFound, reasonGitNotFound, "", nil},
		{"a full queue", errQueueFull, codes.ResourceExhausted, reasonResourceExhausted, "", nil},
		{"a reused request id", errRequestIDReused{id: "r1", build: "b"}, codes.AlreadyExists, reasonRequestIDReused, "request_id", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, be, info, bad := statusDetails(t, refusalStatus(tt.err))
			if st.Code() != tt.code || st.Message() != tt.err.Error() {
				t.Errorf("status %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.err.Error())
			}
			if be != nil {
				t.Errorf("a refusal carries a BuildError: %v", be)
			}
			if info.GetReason() != tt.reason || info.GetDomain() != ErrorDomain || info.GetMetadata()["field"] != tt.field {
				t.Errorf("ErrorInfo %v, want reason %s, domain %s, field %q", info, tt.reason, ErrorDomain, tt.field)
			}
			switch {
			case tt.violation == nil && bad != nil:
				t.Errorf("BadRequest %v, want none", bad)
			case tt.violation != nil && (len(bad.GetFieldViolations()) != 1 || !proto.Equal(bad.GetFieldViolations()[0], tt.violation)):
				t.Errorf("BadRequest %v, want the violation %v", bad, tt.violation)
			}
		})
	}
}
