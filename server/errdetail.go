package server

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/errdefs"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo the service's
// errors carry.
const ErrorDomain = "buildsvc.dev"

// The reasons of BuildError.reason and of the google.rpc.ErrorInfo of a
// call's status (proto/build/v1/build.proto lists them).
const (
	reasonCompile            = "COMPILE_ERROR"
	reasonDownload           = "DOWNLOAD_ERROR"
	reasonGitAuth            = "GIT_AUTH"
	reasonGitNotFound        = "GIT_NOT_FOUND"
	reasonGitUnavailable     = "GIT_UNAVAILABLE"
	reasonGitHostKey         = "GIT_HOST_KEY"
	reasonRegistryAuth       = "REGISTRY_AUTH"
	reasonBaseNotFound       = "BASE_NOT_FOUND"
	reasonPushFailed         = "PUSH_FAILED"
	reasonTimeout            = "TIMEOUT"
	reasonCancelled          = "CANCELLED"
	reasonInterrupted        = "INTERRUPTED"
	reasonBuilderLost        = "BUILDER_LOST"
	reasonRegistryDown       = "REGISTRY_UNAVAILABLE"
	reasonBuilderUnavailable = "BUILDER_UNAVAILABLE"
	reasonHistoryUnavailable = "HISTORY_UNAVAILABLE"
	reasonInvalidArgument    = "INVALID_ARGUMENT"
	reasonPermissionDenied   = "PERMISSION_DENIED"
	reasonUnauthenticated    = "UNAUTHENTICATED"
	reasonResourceExhausted  = "RESOURCE_EXHAUSTED"
	reasonShuttingDown       = "SHUTTING_DOWN"
	reasonRequestIDReused    = "REQUEST_ID_REUSED"
	reasonInternal           = "INTERNAL"
)

// maxTailLines and maxTailLine bound BuildError.log_tail: it travels in
// the status of a call (a trailer), whose size clients limit.
// Only the last maxTailRead bytes of the step's output are read for them.
const (
	maxTailLines = 20
	maxTailLine  = 256
	maxTailRead  = 64 << 10
)

// imageStepPrefix starts the name of the step that looks up an image's
// config (the builder's and the base's; solve.go's LogName).
const imageStepPrefix = "resolve image config for "

// endOfRun is endOf for a build that ran: its log l names the step that
// failed, with the step's last lines of output.
func endOfRun(err error, l *eventLog) (buildv1.BuildState, *buildv1.BuildError) {
	var evs []*buildv1.BuildEvent
	if l != nil {
		evs, _, _ = l.since(0)
	}
	return endState(err), classify(err, evs)
}

// endState is the state a build that stopped with err ends in.
func endState(err error) buildv1.BuildState {
	switch {
	case errors.Is(err, errCancelled):
		return buildv1.BuildState_BUILD_STATE_CANCELLED
	case errors.Is(err, errShutdown):
		return buildv1.BuildState_BUILD_STATE_INTERRUPTED
	}
	return buildv1.BuildState_BUILD_STATE_FAILED
}

// classify fills the BuildError of a build that ended with err, whose log
// so far is evs (nil for a build that never ran): its code, message and
// reason, and, when a step failed, the step's name, exit code and last
// lines of output. BuildKit's typed errors say which step failed and how
// (errdefs.VertexError, errdefs.SolveError, the gateway's ExitError), the
// server's own which of its checks did; the message is read only where
// nothing typed says more (see textCode).
func classify(err error, evs []*buildv1.BuildEvent) *buildv1.BuildError {
	be := &buildv1.BuildError{Code: int32(errorCode(err)), Message: err.Error()}
	var run *runInfo
	if evs != nil {
		run = &runInfo{step: failedStepOf(err, evs), pushed: reachedPush(evs)}
		run.kind = kindOf(err, "")
		if run.step != nil {
			be.Step, be.LogTail = run.step.name, run.step.tail
			run.kind = run.step.kind
		}
	}
	if ee, ok := errors.AsType[*gatewaypb.ExitError](err); ok {
		be.ExitCode = int32(ee.ExitCode)
	}
	be.Reason = reasonOf(err, run)
	if be.Reason == reasonBaseNotFound {
		be.Code = int32(codes.NotFound)
	}
	return be
}

// runInfo is what a build's log says of how its run ended.
type runInfo struct {
	step   *failedStep // the step that failed, nil if none did
	kind   stepKind    // what the step that failed does
	pushed bool        // the build got as far as its push
}

// stepKind is what a step of the build graph does.
type stepKind int

const (
	stepOther    stepKind = iota
	stepCompile           // go build
	stepDownload          // go mod download
	stepGit               // the git source
	stepImage             // an image's config lookup
)

// failedStep is the step that failed a build, as its log shows it.
type failedStep struct {
	name string
	kind stepKind
	// out is the step's whole output in the log; tail its last lines.
	out  []byte
	tail []string
}

// failedStepOf finds, in a build's log evs, the step that failed it: the
// vertex BuildKit's error names (errdefs.VertexError), else the last one
// whose completion carried an error. It is nil when no step failed.
func failedStepOf(err error, evs []*buildv1.BuildEvent) *failedStep {
	var digest string
	if ve, ok := errors.AsType[*errdefs.VertexError](err); ok && ve.Vertex != nil {
		digest = ve.GetDigest()
	}
	names := map[string]string{}
	var lastFailed string
	for _, e := range evs {
		v := e.GetVertex()
		if v == nil {
			continue
		}
		if v.GetName() != "" {
			names[v.GetDigest()] = v.GetName()
		}
		if v.GetError() != "" {
			lastFailed = v.GetDigest()
		}
	}
	if _, known := names[digest]; !known {
		digest = lastFailed
	}
	if digest == "" {
		return nil
	}
	var out []byte
	for _, e := range evs {
		if lg := e.GetLog(); lg != nil && lg.GetVertex() == digest {
			out = append(out, lg.GetData()...)
		}
	}
	end := out
	if len(end) > maxTailRead {
		end = end[len(end)-maxTailRead:]
		if i := bytes.IndexByte(end, '\n'); i >= 0 {
			end = end[i+1:] // from the first whole line
		}
	}
	s := &failedStep{name: names[digest], out: out, tail: logTail(end, maxTailLines)}
	s.kind = kindOf(err, s.name)
	return s
}

// kindOf says what the failed step named name does: by the op BuildKit's
// error carries (errdefs.SolveError: the exec's arguments), else by the
// name the build graph gave it (llb's custom names).
func kindOf(err error, name string) stepKind {
	if se, ok := errors.AsType[*errdefs.SolveError](err); ok && se.Solve != nil {
		if args := se.GetOp().GetExec().GetMeta().GetArgs(); len(args) >= 2 && args[0] == "go" {
			switch {
			case args[1] == "build":
				return stepCompile
			case args[1] == "mod" && len(args) >= 3 && args[2] == "download":
				return stepDownload
			}
		}
	}
	switch {
	case strings.HasPrefix(name, compileNameMarker):
		return stepCompile
	case name == downloadNameMarker:
		return stepDownload
	case strings.HasPrefix(name, quietPrefix):
		return stepGit
	case strings.HasPrefix(name, imageStepPrefix):
		return stepImage
	}
	return stepOther
}

// reachedPush reports whether the build in evs got as far as its push:
// its graph was solved, so what failed is the export.
func reachedPush(evs []*buildv1.BuildEvent) bool {
	for _, e := range evs {
		if e.GetState().GetState() == buildv1.BuildState_BUILD_STATE_PUSHING {
			return true
		}
	}
	return false
}

// reasonOf is the reason of err: the end of a build that ran (run says
// how), or, with run nil, a refusal before the build was queued or the
// end of a build that never left the queue.
func reasonOf(err error, run *runInfo) string {
	if r := ownReason(err); r != "" {
		return r
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, context.Canceled):
		return reasonCancelled
	}
	if run == nil {
		return codeReason(errorCode(err))
	}
	kind := run.kind
	if _, ok := errors.AsType[*gatewaypb.ExitError](err); ok {
		switch kind {
		case stepCompile:
			if run.step != nil && missedModules(run.step.out) {
				// The compile step wanted a module the download step did
				// not fetch: the download is what failed.
				return reasonDownload
			}
			return reasonCompile
		case stepDownload:
			return reasonDownload
		}
	}
	if builderGone(err) {
		// The connection to buildkitd broke after the solve began (one
		// that could not be made at all is errBuildkitUnavailable).
		return reasonBuilderLost
	}
	switch code := errorCode(err); {
	case code == codes.Unauthenticated, code == codes.PermissionDenied:
		if kind == stepGit {
			return reasonGitAuth
		}
		return reasonRegistryAuth
	case kind == stepGit && code == codes.NotFound:
		return reasonGitNotFound
	case kind == stepGit:
		return reasonGitUnavailable
	case run.pushed:
		return reasonPushFailed
	case kind == stepImage && (code == codes.NotFound || textNotFound(err)):
		return reasonBaseNotFound
	case code == codes.NotFound && run.step == nil:
		return reasonBaseNotFound
	}
	return reasonInternal
}

// ownReason is the reason of an error of the server's own, "" for any
// other error.
func ownReason(err error) string {
	switch {
	case errors.Is(err, errCancelled):
		return reasonCancelled
	case errors.Is(err, errShutdown):
		return reasonInterrupted
	case errors.As(err, new(errTimeout)):
		return reasonTimeout
	case errors.As(err, new(errHistoryWrite)), errors.As(err, new(errHistoryRead)):
		return reasonHistoryUnavailable
	case errors.As(err, new(errRequestIDReused)):
		return reasonRequestIDReused
	case errors.As(err, new(errBuilderLost)):
		return reasonBuilderLost
	case errors.As(err, new(errRegistryUnavailable)):
		return reasonRegistryDown
	case errors.Is(err, errBuildkitUnavailable):
		return reasonBuilderUnavailable
	case errors.Is(err, errShuttingDown):
		return reasonShuttingDown
	case errors.As(err, new(errPrivateModuleUnreachable)):
		return reasonDownload
	case errors.As(err, new(*gitAuthError)):
		return reasonGitAuth
	case errors.As(err, new(*FieldError)):
		return reasonInvalidArgument
	case errors.Is(err, ErrRefNotFound):
		return reasonGitNotFound
	case errors.Is(err, errNoIdentity):
		return reasonUnauthenticated
	case errors.Is(err, errNotAdmin), errors.As(err, new(*policy.Denied)):
		return reasonPermissionDenied
	case errors.Is(err, errQueueFull), errors.As(err, new(errTenantLimit)), errors.As(err, new(errResolveBusy)):
		return reasonResourceExhausted
	}
	if nf, ok := errors.AsType[*notFoundField](err); ok {
		if nf.field == "base_image" || nf.field == "builder_image" {
			return reasonBaseNotFound
		}
		return reasonGitNotFound
	}
	if re, ok := errors.AsType[*resolveError](err); ok {
		switch re.f.Kind {
		case egress.KindNotFound:
			return reasonGitNotFound
		case egress.KindAuth, egress.KindDenied:
			return reasonGitAuth
		case egress.KindHostKey:
			return reasonGitHostKey
		case egress.KindTimeout, egress.KindConnRefused, egress.KindHostNotFound, egress.KindUnreachable, egress.KindTLS:
			return reasonGitUnavailable
		}
	}
	return ""
}

// ansiEscape matches the terminal control sequences a step may print
// (colours, cursor moves).
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]`)

// logTail returns the last n lines of a step's output out, without the
// noise around them: terminal control sequences, what a carriage return
// overwrote, trailing blanks and empty lines. A line longer than
// maxTailLine is cut. out is the build's log, where secrets are already
// masked.
func logTail(out []byte, n int) []string {
	text := strings.ToValidUTF8(ansiEscape.ReplaceAllString(string(out), ""), "\uFFFD")
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:] // a progress line, overwritten in place
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines = append(lines, cutLine(line, maxTailLine))
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// cutLine cuts s to at most max bytes, on a rune boundary, marking the cut.
func cutLine(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// endedStatus is the status of a call that streamed build id's log to its
// end, berr being the build's BuildError event (nil if it succeeded): OK,
// or the build's error with the BuildError itself and a google.rpc.ErrorInfo
// as details.
func endedStatus(id string, berr *buildv1.BuildError) error {
	if berr == nil {
		return nil
	}
	code := codes.Code(berr.GetCode())
	if code == codes.OK {
		code = codes.Unknown
	}
	md := map[string]string{"build_id": id}
	if berr.GetStep() != "" {
		md["step"] = berr.GetStep()
	}
	if berr.GetExitCode() != 0 {
		md["exit_code"] = strconv.Itoa(int(berr.GetExitCode()))
	}
	return withDetails(status.New(code, berr.GetMessage()), berr, errorInfo(berr.GetReason(), md))
}

// refusalStatus is the status of a call refused before a build was queued:
// err's code and message, a google.rpc.ErrorInfo with its reason and, for
// a field that is not valid, a google.rpc.BadRequest naming it.
func refusalStatus(err error) error {
	st := status.Convert(toStatus(err))
	md := map[string]string{}
	var details []protoadapt.MessageV1
	if fe, ok := errors.AsType[*FieldError](err); ok {
		md["field"] = fe.Field
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: fe.Field, Description: fe.Reason},
		}})
	} else if field := fieldOf(err); field != "" {
		md["field"] = field
	}
	return withDetails(st, append(details, errorInfo(reasonOf(err, nil), md))...)
}

// fieldOf is the request field a refusal other than a FieldError names, ""
// if none.
func fieldOf(err error) string {
	if nf, ok := errors.AsType[*notFoundField](err); ok {
		return nf.field
	}
	if d, ok := errors.AsType[*policy.Denied](err); ok {
		return d.Field
	}
	if _, ok := errors.AsType[*gitAuthError](err); ok {
		return "git_repo"
	}
	if _, ok := errors.AsType[errRequestIDReused](err); ok {
		return "request_id"
	}
	return ""
}

// codeReason is the reason of an error of a build that did not run (a
// refusal, mostly) that nothing more specific explains, by its code.
func codeReason(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return reasonInvalidArgument
	case codes.Unauthenticated:
		return reasonUnauthenticated
	case codes.PermissionDenied:
		return reasonPermissionDenied
	case codes.ResourceExhausted:
		return reasonResourceExhausted
	case codes.Unavailable:
		return reasonGitUnavailable // the resolve's connection, the only I/O before queueing
	case codes.NotFound:
		return reasonGitNotFound
	}
	return reasonInternal
}

func errorInfo(reason string, md map[string]string) *errdetails.ErrorInfo {
	if reason == "" {
		reason = reasonInternal
	}
	if len(md) == 0 {
		md = nil
	}
	return &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}
}

// withDetails is st with details, or st as it is if they cannot be added.
func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	if d, err := st.WithDetails(details...); err == nil {
		return d.Err()
	}
	return st.Err()
}

// buildEnd remembers the BuildError event of a build's log as a stream
// passes it on, for the status the stream ends with.
type buildEnd struct{ err *buildv1.BuildError }

// watch wraps send.
func (b *buildEnd) watch(send func(*buildv1.BuildEvent) error) func(*buildv1.BuildEvent) error {
	return func(e *buildv1.BuildEvent) error {
		if be := e.GetError(); be != nil {
			b.err = be
		}
		return send(e)
	}
}

// status is the status of the stream of build id's log, once it has sent
// the last event: see endedStatus.
func (b *buildEnd) status(id string) error { return endedStatus(id, b.err) }
