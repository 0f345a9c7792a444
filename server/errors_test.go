package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
)

func TestErrorCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("wrap: %w", fieldErr("image_tag", "bad")), codes.InvalidArgument},
		{fmt.Errorf("git_commit: %w", ErrRefNotFound), codes.NotFound},
		{fmt.Errorf("build x: %w", history.ErrNotFound), codes.NotFound},
		{errQueueFull, codes.ResourceExhausted},
		{fmt.Errorf("%w: %w", errBuildkitUnavailable, errors.New("dial unix /x.sock: no such file or directory")), codes.Unavailable},
		{fmt.Errorf("solve: %w", context.Canceled), codes.Canceled},
		{errors.New(`unexpected status from HEAD request to http://r/v2/a/blobs/sha256:1: 401 Unauthorized`), codes.Unauthenticated},
		{errors.New("push: denied: requested access to the resource is denied"), codes.PermissionDenied},
		{fmt.Errorf("solve: %w", status.Error(codes.Unavailable, "transport closing")), codes.Unavailable},
		{errors.New("list refs of git://h/r.git: dial tcp 127.0.0.1:1: connect: connection refused"), codes.Unavailable},
		{errors.New(`process "go build" did not complete successfully: exit code: 1`), codes.Unknown},
	}
	for _, tt := range tests {
		if got := errorCode(tt.err); got != tt.want {
			t.Errorf("errorCode(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
