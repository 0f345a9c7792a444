package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// errorCode classifies err as a gRPC code, in one place, for both the
// errors calls return and the errors builds end with.
func errorCode(err error) codes.Code {
	var fe *FieldError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &fe):
		return codes.InvalidArgument
	case errors.Is(err, ErrRefNotFound):
		return codes.NotFound
	case errors.Is(err, history.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, errQueueFull):
		return codes.ResourceExhausted
	case errors.Is(err, errShuttingDown), errors.Is(err, errBuildkitUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "401 unauthorized"), strings.Contains(msg, "authentication required"),
		strings.Contains(msg, "no basic auth credentials"), strings.Contains(msg, "unauthorized: "):
		return codes.Unauthenticated
	case strings.Contains(msg, "403 forbidden"), strings.Contains(msg, "denied: "):
		return codes.PermissionDenied
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	if strings.Contains(msg, "connection refused") { // a git server that is down
		return codes.Unavailable
	}
	return codes.Unknown
}

// buildError turns err into the error a build ends with.
func buildError(err error) *buildv1.BuildError {
	return &buildv1.BuildError{Code: int32(errorCode(err)), Message: err.Error()}
}

// toStatus turns err into the gRPC status a call returns, keeping its code.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(errorCode(err), err.Error())
}

// redactor replaces known secrets with a mask wherever an event carries text.
type redactor struct{ secrets []string }

const mask = "*****"

func (r redactor) string(s string) string {
	for _, sec := range r.secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, mask)
		}
	}
	return s
}

func (r redactor) bytes(b []byte) []byte {
	for _, sec := range r.secrets {
		if len(sec) >= 4 && strings.Contains(string(b), sec) {
			return []byte(r.string(string(b)))
		}
	}
	return b
}

// event masks secrets in every text field of e.
func (r redactor) event(e *buildv1.BuildEvent) {
	if len(r.secrets) == 0 {
		return
	}
	switch ev := e.GetEvent().(type) {
	case *buildv1.BuildEvent_State:
		ev.State.Message = r.string(ev.State.Message)
	case *buildv1.BuildEvent_Vertex:
		ev.Vertex.Name = r.string(ev.Vertex.Name)
		ev.Vertex.Error = r.string(ev.Vertex.Error)
	case *buildv1.BuildEvent_Status:
		ev.Status.Name = r.string(ev.Status.Name)
	case *buildv1.BuildEvent_Log:
		ev.Log.Data = r.bytes(ev.Log.Data)
	case *buildv1.BuildEvent_Warning:
		ev.Warning.Short = r.string(ev.Warning.Short)
		for i := range ev.Warning.Detail {
			ev.Warning.Detail[i] = r.string(ev.Warning.Detail[i])
		}
	case *buildv1.BuildEvent_Error:
		ev.Error.Message = r.string(ev.Error.Message)
	}
}
