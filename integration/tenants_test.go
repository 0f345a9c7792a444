//go:build integration

package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// startTenantServer runs an in-process server behind the real
// authenticator, with a token per tenant named and the tenants' policies,
// and returns a client per tenant.
func startTenantServer(t testing.TB, tenantsYAML string, mutate func(*server.Config), tenants ...string) (*testServer, map[string]buildv1.BuildClient) {
	t.Helper()
	tokens := map[string]string{}
	var callers strings.Builder
	callers.WriteString("callers:\n")
	for _, tenant := range tenants {
		b := make([]byte, 32)
		rand.Read(b)
		tokens[tenant] = hex.EncodeToString(b)
		fmt.Fprintf(&callers, "  - name: %s-caller\n    tenant: %s\n    token_sha256: %s\n", tenant, tenant, auth.HashToken(tokens[tenant]))
	}
	cs, err := auth.ParseCallers([]byte(callers.String()))
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(cs, auth.WithInsecureTokens(), auth.WithPublicMethods(auth.HealthMethods), auth.WithAdminMethods("/build.v1.AdminService/"))
	if err != nil {
		t.Fatal(err)
	}
	pols, err := policy.ParsePolicies([]byte(tenantsYAML))
	if err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, func(c *server.Config) {
		c.Authenticated, c.Tenants = true, pols
		if mutate != nil {
			mutate(c)
		}
	}, grpc.ChainUnaryInterceptor(a.UnaryInterceptor()), grpc.ChainStreamInterceptor(a.StreamInterceptor()))
	clients := map[string]buildv1.BuildClient{}
	for tenant, tok := range tokens {
		conn, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.TokenCredentials(tok, false)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients[tenant] = buildv1.NewBuildClient(conn)
	}
	return ts, clients
}

func buildState(t testing.TB, c buildv1.BuildClient, id string) *buildv1.BuildInfo {
	t.Helper()
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatalf("GetBuild %s: %v", id, err)
	}
	return info
}

// The queue is fair across tenants: tenant a fills it with ten builds, then
// b queues one; b's goes next, before a's second, not after a's tenth.
// A tenant over its own queue limit, rate or policy is refused before
// anything is resolved.
func TestFairQueueAndTenantQuotas(t *testing.T) {
	p := newHangingProxy(t)
	st := loadStack(t)
	tenantsYAML := fmt.Sprintf(`
tenants:
  a:
    max_queued: 9
  b:
    git_hosts: [%q]
    image_tags: [%q]
  c:
    rate_per_minute: 1
    burst: 1
`, strings.TrimPrefix(st.GitBaseURL, "git://"), st.RegistryAddr+"/it/")
	_, c := startTenantServer(t, tenantsYAML, func(cfg *server.Config) {
		p.configure(cfg)
		cfg.MaxConcurrent, cfg.QueueSize = 1, 64
	}, "a", "b", "c")
	repo := hangingRepo(t)
	var a []string
	for i := 1; i <= 10; i++ {
		r, err := c["a"].StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, fmt.Sprintf("a%d", i)))))
		if err != nil {
			t.Fatalf("a's build %d: %v", i, err)
		}
		a = append(a, r.BuildId)
		if i == 1 {
			p.waitReached(t) // a's first build runs and holds the one slot
		}
	}
	t.Cleanup(func() {
		for _, id := range a {
			c["a"].CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: id})
		}
	})
	// a is at its limit of 9 waiting builds.
	_, err := c["a"].StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "a11"))))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "max_queued") {
		t.Errorf("a's eleventh build: %v, want ResourceExhausted naming max_queued", err)
	}

	b, err := c["b"].StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "b1"))))
	if err != nil {
		t.Fatalf("b's build: %v", err)
	}
	t.Cleanup(func() { c["b"].CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: b.BuildId}) })
	if pos := buildState(t, c["b"], b.BuildId).QueuePosition; pos != 0 {
		t.Errorf("b's build is at queue position %d, want 0 (next)", pos)
	}
	if pos := buildState(t, c["a"], a[9]).QueuePosition; pos != 9 {
		t.Errorf("a's tenth build is at queue position %d, want 9 (after b's)", pos)
	}

	// The slot frees: b's build starts, a's second and tenth still wait.
	if _, err := c["a"].CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: a[0]}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for buildState(t, c["b"], b.BuildId).State == buildv1.BuildState_BUILD_STATE_QUEUED {
		if time.Now().After(deadline) {
			t.Fatal("b's build did not start after a's first was cancelled")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{a[1], a[9]} {
		if s := buildState(t, c["a"], id).State; s != buildv1.BuildState_BUILD_STATE_QUEUED {
			t.Errorf("a's build %s is %v, want QUEUED while b's runs", id, s)
		}
	}

	// b's policy: its git host and tag prefix only.
	for _, tt := range []struct {
		name  string
		req   *buildv1.CreateImageRequest
		field string
		rule  string
	}{
		{"another git host", &buildv1.CreateImageRequest{GitRepo: "git://127.0.0.2:1/x.git", ImageTag: tagFor(t, "b2")}, "git_repo", "git_hosts"},
		{"another registry", &buildv1.CreateImageRequest{GitRepo: repo.URL, ImageTag: "127.0.0.1:1/x:1"}, "image_tag", "image_tags"},
	} {
		_, err := c["b"].StartBuild(t.Context(), startRequest(tt.req))
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), tt.field+":") || !strings.Contains(st.Message(), tt.rule) {
			t.Errorf("b, %s: %v, want PermissionDenied naming %s and %s", tt.name, err, tt.field, tt.rule)
		}
	}

	// c's rate: one build a minute.
	cr, err := c["c"].StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "c1"))))
	if err != nil {
		t.Fatalf("c's first build: %v", err)
	}
	t.Cleanup(func() { c["c"].CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: cr.BuildId}) })
	_, err = c["c"].StartBuild(t.Context(), startRequest(p.request(repo, tagFor(t, "c2"))))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "rate_per_minute") {
		t.Errorf("c's second build within a minute: %v, want ResourceExhausted naming rate_per_minute", err)
	}
}

// Each tenant pulls and pushes with the registry credentials its policy
// names: a tenant given the stack's credentials by name builds and pushes; a
// tenant given none cannot use the server's credentials, and the registry
// (which requires login) refuses its build (Unauthenticated).
func TestTenantRegistryCredentials(t *testing.T) {
	st := loadStack(t)
	_, c := startTenantServer(t, `
tenants:
  pusher:
    registry_credentials: stack
  nobody:
    registry_credentials: none
`, func(cfg *server.Config) {
		cfg.DockerConfigDir = t.TempDir() // the default: no credentials
		cfg.RegistryCredentials = map[string]string{"stack": st.DockerConfig}
	}, "pusher", "nobody")
	repo := newRepo(t, sampleFiles(t))
	requireSuccess(t, build(t, c["pusher"], &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "pusher")}))

	o := build(t, c["nobody"], &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "nobody")})
	berr := o.buildErr()
	if berr == nil || codes.Code(berr.Code) != codes.Unauthenticated {
		t.Fatalf("the tenant without credentials: error %v (stream %v), want Unauthenticated from the registry", berr, o.err)
	}
}
