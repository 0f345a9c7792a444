//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/llb"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// stackSecurity is what .stack/env says about the stack server's security.
type stackSecurity struct {
	addr, ca, devToken, otherToken, adminToken, mtlsCert, mtlsKey string
}

func loadStackSecurity(t testing.TB) stackSecurity {
	t.Helper()
	s := stackSecurity{
		addr: os.Getenv("BUILD_SERVER_ADDR"), ca: os.Getenv("BUILDSVC_TLS_CA"),
		devToken: os.Getenv("BUILDSVC_TOKEN_FILE"), otherToken: os.Getenv("BUILDSVC_TOKEN_FILE_OTHER"),
		adminToken: os.Getenv("BUILDSVC_ADMIN_TOKEN_FILE"),
		mtlsCert:   os.Getenv("BUILDSVC_MTLS_CERT"), mtlsKey: os.Getenv("BUILDSVC_MTLS_KEY"),
	}
	for k, v := range map[string]string{"BUILD_SERVER_ADDR": s.addr, "BUILDSVC_TLS_CA": s.ca, "BUILDSVC_TOKEN_FILE": s.devToken,
		"BUILDSVC_TOKEN_FILE_OTHER": s.otherToken, "BUILDSVC_ADMIN_TOKEN_FILE": s.adminToken,
		"BUILDSVC_MTLS_CERT": s.mtlsCert, "BUILDSVC_MTLS_KEY": s.mtlsKey} {
		if v == "" {
			t.Fatalf("%s is not set: run the integration tests with `make test`, which starts the stack and sources .stack/env", k)
		}
	}
	return s
}

// dial connects to the stack's server over TLS, with the token in
// tokenFile ("" for none) and, if mtls, the client certificate.
func (s stackSecurity) dial(t testing.TB, tokenFile string, mtls bool) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(s.tlsConfig(t, mtls)))}
	if tokenFile != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.TokenCredentials(s.token(t, tokenFile), true)))
	}
	conn, err := grpc.NewClient(s.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tlsConfig trusts the stack's CA and, if mtls, presents the dev
// tenant's client certificate.
func (s stackSecurity) tlsConfig(t testing.TB, mtls bool) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if mtls {
		pair, err := tls.LoadX509KeyPair(s.mtlsCert, s.mtlsKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func (s stackSecurity) token(t testing.TB, file string) string {
	t.Helper()
	tok, err := auth.ReadTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func listIDs(t testing.TB, c buildv1.BuildClient, req *buildv1.ListBuildsRequest) map[string]string {
	t.Helper()
	resp, err := c.ListBuilds(t.Context(), req)
	if err != nil {
		t.Fatalf("ListBuilds: %v", err)
	}
	ids := map[string]string{}
	for _, b := range resp.Builds {
		ids[b.BuildId] = b.Tenant
	}
	return ids
}

// The stack's server runs secured like production: TLS, tokens and mTLS.
// A call with no credentials is Unauthenticated; tenant "dev" builds; tenant
// "other" can neither see, watch nor cancel that build (NotFound) and lists
// only its own; the dev tenant's mTLS identity sees the build as the token
// does; only the admin runs Admin.Cleanup. No token reaches the server's log,
// which holds an audit record of each call.
func TestStackServerTenants(t *testing.T) {
	sec := loadStackSecurity(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	anon := buildv1.NewBuildClient(sec.dial(t, "", false))
	if _, err := anon.ListBuilds(ctx, &buildv1.ListBuildsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListBuilds without a token: %v, want Unauthenticated", err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.token")
	if err := os.WriteFile(wrong, []byte("not-a-token-of-this-server-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := buildv1.NewBuildClient(sec.dial(t, wrong, false)).ListBuilds(ctx, &buildv1.ListBuildsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListBuilds with a wrong token: %v, want Unauthenticated", err)
	}
	plain, err := grpc.NewClient(sec.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := buildv1.NewBuildClient(plain).ListBuilds(ctx, &buildv1.ListBuildsRequest{}); err == nil {
		t.Error("a plaintext call was answered: the server does not require TLS")
	}
	if resp, err := healthpb.NewHealthClient(sec.dial(t, "", false)).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a token: %v %v, want SERVING", resp.GetStatus(), err)
	}

	dev := buildv1.NewBuildClient(sec.dial(t, sec.devToken, false))
	other := buildv1.NewBuildClient(sec.dial(t, sec.otherToken, false))
	mtls := buildv1.NewBuildClient(sec.dial(t, "", true))
	adminConn := sec.dial(t, sec.adminToken, false)
	admin := buildv1.NewBuildClient(adminConn)

	repo := newRepo(t, sampleFiles(t))
	start, err := dev.StartBuild(ctx, startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "dev")}))
	if err != nil {
		t.Fatalf("dev's StartBuild: %v", err)
	}
	id := start.BuildId
	otherRepo := newRepo(t, sampleFiles(t))
	otherStart, err := other.StartBuild(ctx, startRequest(&buildv1.CreateImageRequest{GitRepo: otherRepo.URL, GitCommit: "main", ImageTag: tagFor(t, "other")}))
	if err != nil {
		t.Fatalf("other's StartBuild: %v", err)
	}

	// While dev's build runs, and after it ended.
	for _, when := range []string{"running", "ended"} {
		if when == "ended" {
			evs := watchAll(t, dev, id, 0)
			if len(evs) == 0 || evs[len(evs)-1].GetResult() == nil {
				t.Fatalf("dev's build did not succeed: %v", evs[len(evs)-1])
			}
		}
		_, err := other.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: id})
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: other's GetBuild of dev's build: %v, want NotFound", when, err)
		}
		_, missing := other.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: "20200101-000000.000000-0000000000"})
		if got, want := strings.ReplaceAll(status.Convert(err).Message(), id, "ID"), strings.ReplaceAll(status.Convert(missing).Message(), "20200101-000000.000000-0000000000", "ID"); got != want {
			t.Errorf("%s: another tenant's build says %q, a missing one %q", when, got, want)
		}
		ws, err := other.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id})
		if err == nil {
			_, err = ws.Recv()
		}
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: other's WatchBuild of dev's build: %v, want NotFound", when, err)
		}
		if _, err := other.CancelBuild(ctx, &buildv1.CancelBuildRequest{BuildId: id}); status.Code(err) != codes.NotFound {
			t.Errorf("%s: other's CancelBuild of dev's build: %v, want NotFound", when, err)
		}
		if ids := listIDs(t, other, &buildv1.ListBuildsRequest{PageSize: 1000}); ids[id] != "" || ids[otherStart.BuildId] != "other" {
			t.Errorf("%s: other lists %v: it must hold its own build and not dev's", when, ids)
		}
		for bid, tenant := range listIDs(t, other, &buildv1.ListBuildsRequest{PageSize: 1000, Tenant: "dev"}) {
			if tenant != "other" {
				t.Errorf("%s: other asked for dev's builds and got %s of tenant %q", when, bid, tenant)
			}
		}
		info, err := mtls.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: id})
		if err != nil || info.Tenant != "dev" {
			t.Errorf("%s: the dev tenant's mTLS identity GetBuild: %v %v", when, info.GetTenant(), err)
		}
		if _, err := mtls.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: otherStart.BuildId}); status.Code(err) != codes.NotFound {
			t.Errorf("%s: dev's mTLS identity sees other's build: %v", when, err)
		}
		if ids := listIDs(t, admin, &buildv1.ListBuildsRequest{PageSize: 1000}); ids[id] != "dev" || ids[otherStart.BuildId] != "other" {
			t.Errorf("%s: admin lists %v: it must see both tenants' builds", when, ids)
		}
	}
	watchAll(t, other, otherStart.BuildId, 0)

	// Each tenant's build used a Go build cache of its own, read back from
	// BuildKit's disk usage.
	bk, err := buildkitd.Dial(ctx, buildkitd.Endpoint{Address: loadStack(t).BuildKitAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	du, err := bk.DiskUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"dev", "other"} {
		want := fmt.Sprintf("with id %q", llb.GoBuildCacheID+"-tenant-"+tenant)
		found := false
		for _, r := range du {
			found = found || r.RecordType == client.UsageRecordTypeCacheMount && strings.Contains(r.Description, want)
		}
		if !found {
			t.Errorf("BuildKit has no cache mount %s", want)
		}
	}

	if _, err := buildv1.NewAdminServiceClient(sec.dial(t, sec.devToken, false)).Cleanup(ctx, &buildv1.CleanupRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Cleanup by a tenant: %v, want PermissionDenied", err)
	}
	if _, err := buildv1.NewAdminServiceClient(sec.dial(t, "", true)).Cleanup(ctx, &buildv1.CleanupRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Cleanup by a tenant's mTLS identity: %v, want PermissionDenied", err)
	}
	if _, err := buildv1.NewAdminServiceClient(adminConn).Cleanup(ctx, &buildv1.CleanupRequest{}); err != nil {
		t.Errorf("Cleanup by the admin: %v", err)
	}

	// The CLI goes through TLS and the token from the environment.
	r := runCLIEnv(t, []string{"BUILDSVC_TLS_CA=" + sec.ca, "BUILDSVC_TOKEN_FILE=" + sec.otherToken},
		"builds", "ls", "--server", sec.addr, "--output", "json")
	if r.code != 0 || strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, otherStart.BuildId) {
		t.Errorf("buildsvc builds ls as other: exit %d, lists dev's build %v, its own %v\n%s%s",
			r.code, strings.Contains(r.stdout, id), strings.Contains(r.stdout, otherStart.BuildId), r.stdout, r.stderr)
	}
	r = runCLIEnv(t, []string{"BUILDSVC_TLS_CA=" + sec.ca}, "builds", "ls", "--server", sec.addr)
	if r.code == 0 || !strings.Contains(r.stderr, "Unauthenticated") && !strings.Contains(strings.ToLower(r.stderr), "unauthenticated") {
		t.Errorf("buildsvc builds ls without a token: exit %d\n%s", r.code, r.stderr)
	}

	// No token in the server's log; an audit record of the refused and the
	// cancelled calls.
	logFile := filepath.Join(os.Getenv("STACK_DIR"), "logs", "server.log")
	lf, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	logText, err := io.ReadAll(lf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{sec.devToken, sec.otherToken, sec.adminToken, wrong} {
		if tok, err := os.ReadFile(f); err == nil && strings.Contains(string(logText), strings.TrimSpace(string(tok))) {
			t.Errorf("the server log holds the token of %s", f)
		}
	}
	var audited, refused bool
	for _, line := range strings.Split(string(logText), "\n") {
		if strings.Contains(line, "msg=call") && strings.Contains(line, "CancelBuild") && strings.Contains(line, "caller=other") && strings.Contains(line, "build="+id) {
			audited = true
		}
		if strings.Contains(line, "msg=call") && strings.Contains(line, "code=Unauthenticated") {
			refused = true
		}
	}
	if !audited || !refused {
		t.Errorf("the server log lacks audit records: other's cancel of %s %v, a refused call %v", id, audited, refused)
	}
}
