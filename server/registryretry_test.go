package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestRegistryTroubleOf(t *testing.T) {
	tests := []struct {
		msg       string
		host, why string
	}{
		{"failed to push 127.0.0.1:5000/app:v1: unexpected status from PUT request to http://127.0.0.1:5000/v2/app/manifests/v1: 429 Too Many Requests",
			"127.0.0.1:5000", "429 Too Many Requests"},
		{"failed to copy: unexpected status from POST request to https://registry.example/v2/team/app/blobs/uploads/: 503 Service Unavailable",
			"registry.example", "503 Service Unavailable"},
		{`failed to do request: Put "https://registry.example:8443/v2/app/blobs/uploads/1?digest=sha256:ab": read tcp 10.0.0.1:4242->10.0.0.2:8443: read: connection reset by peer`,
			"registry.example:8443", "connection reset by peer"},
		{`failed to do request: Head "http://127.0.0.1:15000/v2/app/blobs/sha256:ab": EOF`, "127.0.0.1:15000", "EOF"},
		{"failed to solve: failed to push 127.0.0.1:34353/it/retry:sustained: toomanyrequests: slow down",
			"127.0.0.1:34353", "429 Too Many Requests (toomanyrequests: slow down)"},
		{"failed to push registry.example/team/app@sha256:0123abcd: toomanyrequests: You have reached your pull rate limit",
			"registry.example", "429 Too Many Requests (toomanyrequests: You have reached your pull rate limit)"},
		// Not a registry's passing trouble.
		{"unexpected status from PUT request to http://127.0.0.1:5000/v2/app/manifests/v1: 401 Unauthorized", "", ""},
		{"unexpected status from PUT request to http://127.0.0.1:5000/v2/app/manifests/v1: 400 Bad Request", "", ""},
		{"process \"/bin/sh -c go build\" did not complete successfully: exit code: 1", "", ""},
		{"the build said 500 things", "", ""},
	}
	for _, tt := range tests {
		rt, ok := registryTroubleOf(errors.New(tt.msg))
		if ok != (tt.host != "") || rt.host != tt.host || rt.why != tt.why {
			t.Errorf("%q: got %+v %v, want host %q, why %q", tt.msg, rt, ok, tt.host, tt.why)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"3", 3 * time.Second}, {" 120 ", 2 * time.Minute}, {"-1", 0}, {"soon", 0},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// A build that fails on a registry's 429 runs again after a pause and
// succeeds; one whose registry keeps failing ends FAILED, Unavailable,
// REGISTRY_UNAVAILABLE, naming the registry, after registryAttempts runs.
func TestRegistryTroubleRetried(t *testing.T) {
	first, attempts := registryRetryFirst, registryAttempts
	registryRetryFirst, registryAttempts = time.Millisecond, 3
	t.Cleanup(func() { registryRetryFirst, registryAttempts = first, attempts })
	tooMany := status.Error(codes.Unknown, "failed to push registry.example/app:v1: unexpected status from PUT request to https://registry.example/v2/app/manifests/v1: 429 Too Many Requests")
	for _, tt := range []struct {
		name     string
		failures int
		want     buildv1.BuildState
	}{
		{"passing", 2, buildv1.BuildState_BUILD_STATE_SUCCEEDED},
		{"sustained", 100, buildv1.BuildState_BUILD_STATE_FAILED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fk := newFakeBuildKit()
			fk.fail = func(_ string, attempt int) error {
				if attempt < tt.failures {
					return tooMany
				}
				return nil
			}
			e := newLifecycleServer(t, fk, nil)
			id := e.start(t, imageRequest("v1")).GetBuildId()
			evs := e.watch(t, id)
			info := e.get(t, id)
			if info.GetState() != tt.want {
				t.Fatalf("state %v (%v), want %v", info.GetState(), info.GetError(), tt.want)
			}
			warnings := 0
			for _, ev := range evs {
				if strings.HasPrefix(ev.GetWarning().GetShort(), "the registry registry.example answered 429 Too Many Requests: trying again in ") {
					warnings++
				}
			}
			runs := min(tt.failures+1, registryAttempts)
			if warnings != runs-1 {
				t.Errorf("%d retry warnings, want %d", warnings, runs-1)
			}
			if got := len(fk.builds); got != runs {
				t.Errorf("%d runs, want %d", got, runs)
			}
			if tt.want == buildv1.BuildState_BUILD_STATE_FAILED {
				be := info.GetError()
				wantMsg := fmt.Sprintf("the registry registry.example is unavailable: %d attempts failed, the last on 429 Too Many Requests", registryAttempts)
				if codes.Code(be.GetCode()) != codes.Unavailable || be.GetReason() != reasonRegistryDown || !strings.HasPrefix(be.GetMessage(), wantMsg) {
					t.Errorf("error %v, want Unavailable, %s, %q", be, reasonRegistryDown, wantMsg)
				}
			}
		})
	}
}
