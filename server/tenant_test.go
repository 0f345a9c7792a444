package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// watchStream is the server side of a WatchBuild stream, collecting what is
// sent.
type watchStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*buildv1.BuildEvent
}

func (w *watchStream) Context() context.Context { return w.ctx }
func (w *watchStream) Send(e *buildv1.BuildEvent) error {
	w.sent = append(w.sent, e)
	return nil
}

// A tenant's callers see, watch and cancel only its own builds; another
// tenant's build is NotFound with the message of a build that does not
// exist. Admins see all, and alone run Admin calls.
func TestTenantsSeeOnlyTheirBuilds(t *testing.T) {
	ctx := context.Background()
	store, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i, tenant := range []string{"team-a", "team-b", "team-a"} {
		info := &buildv1.BuildInfo{BuildId: fmt.Sprintf("b%d", i+1), Tenant: tenant, State: buildv1.BuildState_BUILD_STATE_SUCCEEDED}
		if err := store.PutBuild(ctx, info); err != nil {
			t.Fatal(err)
		}
		ev := &buildv1.BuildEvent{BuildId: info.BuildId, Seq: 1, Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: info.State}}}
		if err := store.AppendEvents(ctx, info.BuildId, []*buildv1.BuildEvent{ev}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{cfg: Config{Store: store, Authenticated: true, Logger: slog.New(slog.DiscardHandler)},
		active: map[string]*build{}, inflight: map[string]*build{}}
	as := func(id auth.Identity) context.Context { return auth.NewContext(ctx, id) }
	a := as(auth.Identity{Name: "alice", Tenant: "team-a"})
	b := as(auth.Identity{Name: "bob", Tenant: "team-b"})
	admin := as(auth.Identity{Name: "root", Admin: true})

	list := func(ctx context.Context, req *buildv1.ListBuildsRequest) string {
		resp, err := s.ListBuilds(ctx, req)
		if err != nil {
			return err.Error()
		}
		var ids []string
		for _, b := range resp.Builds {
			ids = append(ids, b.BuildId)
		}
		return fmt.Sprint(ids)
	}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		req  *buildv1.ListBuildsRequest
		want string
	}{
		{"team a", a, &buildv1.ListBuildsRequest{}, "[b3 b1]"},
		{"team b", b, &buildv1.ListBuildsRequest{}, "[b2]"},
		{"team b asking for team a's", b, &buildv1.ListBuildsRequest{Tenant: "team-a"}, "[b2]"},
		{"admin", admin, &buildv1.ListBuildsRequest{}, "[b3 b2 b1]"},
		{"admin, one tenant", admin, &buildv1.ListBuildsRequest{Tenant: "team-b"}, "[b2]"},
	} {
		if got := list(tt.ctx, tt.req); got != tt.want {
			t.Errorf("ListBuilds, %s = %s, want %s", tt.name, got, tt.want)
		}
	}

	_, missing := s.GetBuild(b, &buildv1.GetBuildRequest{BuildId: "nope"})
	for _, tt := range []struct {
		name string
		ctx  context.Context
		id   string
		code codes.Code
	}{
		{"own", a, "b1", codes.OK},
		{"other tenant's", b, "b1", codes.NotFound},
		{"admin", admin, "b1", codes.OK},
		{"no identity", ctx, "b1", codes.Unauthenticated},
	} {
		_, err := s.GetBuild(tt.ctx, &buildv1.GetBuildRequest{BuildId: tt.id})
		if status.Code(err) != tt.code {
			t.Errorf("GetBuild, %s: %v, want %v", tt.name, err, tt.code)
		}
		_, err = s.CancelBuild(tt.ctx, &buildv1.CancelBuildRequest{BuildId: tt.id})
		if status.Code(err) != tt.code {
			t.Errorf("CancelBuild, %s: %v, want %v", tt.name, err, tt.code)
		}
		w := &watchStream{ctx: tt.ctx}
		err = s.WatchBuild(&buildv1.WatchBuildRequest{BuildId: tt.id}, w)
		if status.Code(err) != tt.code || (tt.code != codes.OK) != (len(w.sent) == 0) {
			t.Errorf("WatchBuild, %s: %v, %d events; want %v", tt.name, err, len(w.sent), tt.code)
		}
		if tt.code == codes.NotFound {
			want := status.Convert(missing).Message()
			if got := status.Convert(err).Message(); got != fmt.Sprintf("build %q: build not found", tt.id) || want != `build "nope": build not found` {
				t.Errorf("another tenant's build says %q; a missing one %q", got, want)
			}
		}
	}

	if _, err := s.Cleanup(a, &buildv1.CleanupRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Cleanup by a tenant: %v, want PermissionDenied", err)
	}
}

// Without authentication, every call is an admin of the empty tenant.
func TestNoAuthenticationIsOneUser(t *testing.T) {
	s := &Server{cfg: Config{}}
	c, err := s.callerOf(context.Background())
	if err != nil || !c.admin || c.tenant != "" {
		t.Errorf("caller = %+v, %v", c, err)
	}
}

// Identical requests of two tenants never share a build.
func TestDedupKeyHasTheTenant(t *testing.T) {
	r := &request{Repo: "https://git.example/x.git", Tag: "r.example/x:1"}
	if dedupKey("a", r, "sha") == dedupKey("b", r, "sha") {
		t.Error("two tenants share a dedup key")
	}
	if dedupKey("a", r, "sha") != dedupKey("a", r, "sha") {
		t.Error("the key is not stable")
	}
}

// refusingResolver fails the test if the server resolves anything.
type refusingResolver struct{ t *testing.T }

func (r refusingResolver) Resolve(context.Context, string, string, egress.Auth) (string, error) {
	r.t.Error("the server resolved a ref of a request its tenant's policy refuses")
	return "", errors.New("not resolved")
}

// A request outside its tenant's policy is PermissionDenied naming the
// field and the rule, before the server does any I/O.
func TestTenantPolicyRefusesFirst(t *testing.T) {
	pols, err := policy.ParsePolicies([]byte(`
tenants:
  team-a:
    git_hosts: ["git.example"]
    image_tags: ["registry.example/team-a/"]
    base_images: ["registry.example/base/"]
    max_timeout: 10m
    allow: {build_flags: ["-toolexec"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Authenticated: true, Tenants: pols, Resolver: refusingResolver{t}, BaseImage: "registry.example/base/static:1",
		DefaultTimeout: time.Minute, MaxTimeout: time.Hour, Logger: slog.New(slog.DiscardHandler)},
		active: map[string]*build{}, inflight: map[string]*build{}, queue: newFairQueue(), runningBy: map[string]int{}, limiters: map[string]*rate.Limiter{}}
	a := auth.NewContext(context.Background(), auth.Identity{Name: "alice", Tenant: "team-a"})
	b := auth.NewContext(context.Background(), auth.Identity{Name: "bob", Tenant: "team-b"})
	ok := func() *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: "https://git.example/a/app.git", GitCommit: "main", ImageTag: "registry.example/team-a/app:1"}
	}
	for _, tt := range []struct {
		name        string
		ctx         context.Context
		mutate      func(*buildv1.CreateImageRequest)
		code        codes.Code
		field, rule string
	}{
		{"git host", a, func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://github.com/a/app.git" }, codes.PermissionDenied, "git_repo", "git_hosts"},
		{"metadata address", a, func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://169.254.169.254/x.git" }, codes.PermissionDenied, "git_repo", "git_hosts"},
		{"image tag", a, func(r *buildv1.CreateImageRequest) { r.ImageTag = "registry.example/team-b/app:1" }, codes.PermissionDenied, "image_tag", "image_tags"},
		{"base image", a, func(r *buildv1.CreateImageRequest) { r.BaseImage = "docker.io/library/alpine:3" }, codes.PermissionDenied, "base_image", "base_images"},
		{"timeout", a, func(r *buildv1.CreateImageRequest) { r.Timeout = durationpb.New(time.Hour) }, codes.PermissionDenied, "timeout", "max_timeout"},
		// Another tenant has no such allowance.
		{"toolexec elsewhere", b, func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-toolexec=/src/t.sh"} }, codes.InvalidArgument, "build_flags[0]", ""},
	} {
		req := ok()
		tt.mutate(req)
		_, err := s.StartBuild(tt.ctx, &buildv1.StartBuildRequest{Request: req})
		st := status.Convert(err)
		if st.Code() != tt.code || !strings.HasPrefix(st.Message(), tt.field+":") || !strings.Contains(st.Message(), tt.rule) {
			t.Errorf("%s: %v %q, want %v naming %s and %s", tt.name, st.Code(), st.Message(), tt.code, tt.field, tt.rule)
		}
	}
}
