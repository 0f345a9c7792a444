package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
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
	case errors.Is(err, errNoIdentity):
		return codes.Unauthenticated
	case errors.Is(err, errNotAdmin), errors.As(err, new(*policy.Denied)):
		return codes.PermissionDenied
	case errors.As(err, new(errTenantLimit)):
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
