package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/riscv64"}, []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/riscv64"}, ""},
		{[]string{" linux/arm64/v8 "}, []string{"linux/arm64"}, ""},
		{[]string{"linux/arm/v6", "linux/386"}, []string{"linux/arm/v6", "linux/386"}, ""},
		{[]string{"linux"}, nil, `"linux" is not a platform`},
		{[]string{""}, nil, "is not a platform"},
		{[]string{"windows/amd64"}, nil, "only linux images"},
		{[]string{"darwin/arm64"}, nil, "only linux images"},
		{[]string{"linux/sparc64"}, nil, "sparc64 is not an architecture Go builds for here"},
		{[]string{"linux/arm/v9"}, nil, `arm has no variant "v9"`},
		{[]string{"linux/amd64", "linux/amd64"}, nil, "linux/amd64 is named twice"},
		{[]string{"linux/arm64", "linux/arm64/v8"}, nil, "linux/arm64 is named twice"},
		{slices.Repeat([]string{"linux/amd64"}, 9), nil, "9 platforms, at most 8"},
	} {
		got, err := parsePlatforms(tc.in)
		if tc.wantErr != "" {
			fe, ok := errors.AsType[*FieldError](err)
			if !ok || fe.Field != "platforms" || !strings.Contains(fe.Reason, tc.wantErr) {
				t.Errorf("%q: %v, want a field error of platforms saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(formatPlatforms(got), tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.in, formatPlatforms(got), err, tc.want)
		}
	}
}

// A request with a platform that cannot be built is InvalidArgument
// naming platforms, before anything is solved or recorded.
func TestBadPlatformRefusedBeforeTheSolve(t *testing.T) {
	fk := newFakeBuildKit()
	e := newLifecycleServer(t, fk, nil)
	req := imageRequest("bad-platform")
	req.Platforms = []string{"linux/amd64", "windows/amd64"}
	_, err := e.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: req})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "platforms") || !strings.Contains(err.Error(), "windows/amd64") {
		t.Fatalf("StartBuild: %v, want InvalidArgument naming platforms and windows/amd64", err)
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if len(fk.builds) != 0 || len(fk.sessions) != 0 {
		t.Errorf("a refused request reached BuildKit: %v solves, %d sessions", fk.builds, len(fk.sessions))
	}
	list, err := e.s.ListBuilds(context.Background(), &buildv1.ListBuildsRequest{})
	if err != nil || len(list.GetBuilds()) != 0 {
		t.Errorf("builds recorded: %v (%v)", list.GetBuilds(), err)
	}
}
