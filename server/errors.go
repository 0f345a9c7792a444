package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
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
	case errors.Is(err, errNoIdentity):
		return codes.Unauthenticated
	case errors.Is(err, errNotAdmin), errors.As(err, new(*policy.Denied)):
		return codes.PermissionDenied
	case errors.As(err, new(errTenantLimit)):
		return codes.ResourceExhausted
	case errors.Is(err, errShuttingDown), errors.Is(err, errBuildkitUnavailable):
		return codes.Unavailable
	case errors.Is(err, errCancelled):
		return codes.Canceled
	case errors.Is(err, errShutdown):
		return codes.Unavailable
	case errors.As(err, new(errTimeout)):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	text := textCode(err.Error())
	if text == codes.Unauthenticated || text == codes.PermissionDenied {
		return text
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	return text
}

// textCode classifies by its message an error that carries no type to tell
// it by: a registry's refusal, which reaches the server through BuildKit as
// text only (BuildKit's resolver and pusher keep no status of the
// registry's answer), and a git server that is down (go-git's dial error).
// It is Unknown for every other message. This, textNotFound and
// registryTroubleOf are the only places the server reads an error's
// message.
func textCode(msg string) codes.Code {
	msg = strings.ToLower(msg)
	switch {
	case strings.Contains(msg, "401 unauthorized"), strings.Contains(msg, "authentication required"),
		strings.Contains(msg, "no basic auth credentials"), strings.Contains(msg, "unauthorized: "):
		return codes.Unauthenticated
	case strings.Contains(msg, "403 forbidden"), strings.Contains(msg, "denied: "):
		return codes.PermissionDenied
	case strings.Contains(msg, "connection refused"):
		return codes.Unavailable
	}
	return codes.Unknown
}

// textNotFound reports whether err, of a step that looks up an image, says
// the registry has no such image: containerd's resolver says "not found"
// (errdefs.ErrNotFound), a type that does not cross BuildKit's gRPC.
func textNotFound(err error) bool {
	return strings.HasSuffix(strings.ToLower(err.Error()), ": not found") ||
		strings.Contains(strings.ToLower(err.Error()), ": not found:")
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
