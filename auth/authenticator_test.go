package auth_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/buildsvc/buildsvc/auth"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// fixture is one test's PKI, tokens and callers.
type fixture struct {
	dir       string
	ca        *testCA
	certFile  string
	keyFile   string
	caFile    string
	serverCAs *x509.CertPool // what clients trust

	tokCI, tokOps, tokBoth string

	deployer, spiffe, dns, mail, both, adminCert, unknown, untrusted, ambiguous, strict, halfStrict *tls.Certificate

	callers *auth.Callers
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ca: newCA(t, "test client CA")}
	serverCA := newCA(t, "test server CA")
	certPEM, keyPEM := serverCA.server(t, "buildsvc")
	f.certFile = writeFile(t, f.dir, "server.crt", certPEM, 0o644)
	f.keyFile = writeFile(t, f.dir, "server.key", keyPEM, 0o600)
	f.caFile = writeFile(t, f.dir, "clients-ca.crt", f.ca.pem, 0o644)
	f.serverCAs = x509.NewCertPool()
	f.serverCAs.AddCert(serverCA.cert)

	f.tokCI, f.tokOps, f.tokBoth = randomToken(t), randomToken(t), randomToken(t)
	f.deployer = f.ca.client(t, clientNames{cn: "deployer.team-b"})
	f.spiffe = f.ca.client(t, clientNames{cn: "anything", uri: "spiffe://example.org/team-c/svc"})
	f.dns = f.ca.client(t, clientNames{cn: "anything-else", dns: "svc.team-d.example.org"})
	f.mail = f.ca.client(t, clientNames{cn: "bot", email: "bot@team-e.example.org"})
	f.both = f.ca.client(t, clientNames{cn: "both.team-f"})
	f.adminCert = f.ca.client(t, clientNames{cn: "admin.ops"})
	f.unknown = f.ca.client(t, clientNames{cn: "nobody", uri: "spiffe://example.org/nobody"})
	f.ambiguous = f.ca.client(t, clientNames{cn: "multi", dns: "multi.example.org", uri: "spiffe://example.org/multi"})
	f.strict = f.ca.client(t, clientNames{cn: "strict.svc", uri: "spiffe://example.org/strict"})
	f.halfStrict = f.ca.client(t, clientNames{cn: "strict.svc"})
	f.untrusted = newCA(t, "rogue CA").client(t, clientNames{cn: "deployer.team-b"})

	callers, err := auth.ParseCallers(fmt.Appendf(nil, `
callers:
  - name: ci
    tenant: team-a
    token_sha256: %s
  - name: ops
    admin: true
    token_sha256: %s
  - name: deployer
    tenant: team-b
    cert_subject_cn: deployer.team-b
  - name: spiffe-svc
    tenant: team-c
    cert_san_uri: spiffe://example.org/team-c/svc
  - name: dns-svc
    tenant: team-d
    cert_san_dns: SVC.team-d.example.org
  - name: mail-svc
    tenant: team-e
    cert_san_email: bot@team-e.example.org
  - name: both
    tenant: team-f
    token_sha256: %s
    cert_subject_cn: both.team-f
  - name: admin-cert
    admin: true
    cert_subject_cn: admin.ops
  - name: multi-a
    tenant: team-g
    cert_san_dns: multi.example.org
  - name: multi-b
    tenant: team-h
    cert_san_uri: spiffe://example.org/multi
  - name: strict
    tenant: team-i
    cert_subject_cn: strict.svc
    cert_san_uri: spiffe://example.org/strict
`, auth.HashToken(f.tokCI), strings.ToUpper(auth.HashToken(f.tokOps)), auth.HashToken(f.tokBoth)))
	if err != nil {
		t.Fatal(err)
	}
	f.callers = callers
	return f
}

// The methods the tests call.
const (
	rpcUnary      = "unary"      // Build.GetBuild
	rpcStream     = "stream"     // Build.WatchBuild
	rpcAdmin      = "admin"      // Admin.Cleanup
	rpcOpen       = "open"       // Build.ListBuilds, made public
	rpcHealth     = "health"     // grpc.health.v1.Health/Check
	rpcReflection = "reflection" // grpc.reflection.v1 ServerReflectionInfo
)

// Headers the fake services report the handler's Identity in.
const (
	hdrOK     = "x-auth-ok"
	hdrName   = "x-auth-name"
	hdrTenant = "x-auth-tenant"
	hdrAdmin  = "x-auth-admin"
	hdrMethod = "x-auth-method"
)

// identityMD is what the handler saw in its context.
func identityMD(ctx context.Context) metadata.MD {
	id, ok := auth.FromContext(ctx)
	return metadata.Pairs(hdrOK, strconv.FormatBool(ok), hdrName, id.Name, hdrTenant, id.Tenant,
		hdrAdmin, strconv.FormatBool(id.Admin), hdrMethod, id.Method)
}

// fakeBuild reports the handler's Identity in the response header.
type fakeBuild struct {
	buildv1.UnimplementedBuildServer
}

func (fakeBuild) GetBuild(ctx context.Context, _ *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	return &buildv1.BuildInfo{}, grpc.SetHeader(ctx, identityMD(ctx))
}

func (fakeBuild) ListBuilds(ctx context.Context, _ *buildv1.ListBuildsRequest) (*buildv1.ListBuildsResponse, error) {
	return &buildv1.ListBuildsResponse{}, grpc.SetHeader(ctx, identityMD(ctx))
}

func (fakeBuild) WatchBuild(_ *buildv1.WatchBuildRequest, ss grpc.ServerStreamingServer[buildv1.BuildEvent]) error {
	if err := ss.SendHeader(identityMD(ss.Context())); err != nil {
		return err
	}
	return ss.Send(&buildv1.BuildEvent{})
}

type fakeAdmin struct {
	buildv1.UnimplementedAdminServiceServer
}

func (fakeAdmin) Cleanup(ctx context.Context, _ *buildv1.CleanupRequest) (*buildv1.CleanupResponse, error) {
	return &buildv1.CleanupResponse{}, grpc.SetHeader(ctx, identityMD(ctx))
}

// serverSetup is how a test server is made.
type serverSetup struct {
	tls      bool // TLS with the fixture's client CA, else plaintext
	insecure bool // WithInsecureTokens
	log      *slog.Logger
}

// startServer serves the fake services behind a on an in-process
// listener and returns it.
func startServer(t *testing.T, f *fixture, s serverSetup) *bufconn.Listener {
	t.Helper()
	opts := []auth.Option{
		auth.WithPublicMethods(auth.HealthMethods, auth.ReflectionMethods),
		auth.WithPublicMethods(buildv1.Build_ListBuilds_FullMethodName),
		auth.WithAdminMethods("/build.v1.AdminService/"),
	}
	if s.insecure {
		opts = append(opts, auth.WithInsecureTokens())
	}
	if s.log != nil {
		opts = append(opts, auth.WithLogger(s.log))
	}
	a, err := auth.New(f.callers, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamInterceptor()),
	}
	if s.tls {
		cfg, err := auth.TLSConfig(f.certFile, f.keyFile, f.caFile)
		if err != nil {
			t.Fatal(err)
		}
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	gs := grpc.NewServer(sopts...)
	buildv1.RegisterBuildServer(gs, fakeBuild{})
	buildv1.RegisterAdminServiceServer(gs, fakeAdmin{})
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)
	lis := bufconn.Listen(1 << 20)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return lis
}

// clientSetup is how a test client connects.
type clientSetup struct {
	tls   bool             // TLS, trusting the server's CA
	cert  *tls.Certificate // client certificate, with tls
	force bool             // send cert even if the server asks for another CA's
	creds credentials.PerRPCCredentials
}

// dial connects to lis.
func dial(t *testing.T, f *fixture, lis *bufconn.Listener, c clientSetup) (*grpc.ClientConn, error) {
	t.Helper()
	tc := insecure.NewCredentials()
	if c.tls {
		cfg := &tls.Config{RootCAs: f.serverCAs, ServerName: "localhost", MinVersion: tls.VersionTLS12}
		switch {
		case c.cert != nil && c.force:
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.cert, nil }
		case c.cert != nil:
			cfg.Certificates = []tls.Certificate{*c.cert}
		}
		tc = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(tc),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
	}
	if c.creds != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(c.creds))
	}
	conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return conn, nil
}

// call makes one rpc and returns the Identity its handler saw (nil when
// the handler reported none or does not report).
func call(ctx context.Context, conn *grpc.ClientConn, rpc string) (*auth.Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var md metadata.MD
	var err error
	switch rpc {
	case rpcUnary:
		_, err = buildv1.NewBuildClient(conn).GetBuild(ctx, &buildv1.GetBuildRequest{}, grpc.Header(&md))
	case rpcOpen:
		_, err = buildv1.NewBuildClient(conn).ListBuilds(ctx, &buildv1.ListBuildsRequest{}, grpc.Header(&md))
	case rpcAdmin:
		_, err = buildv1.NewAdminServiceClient(conn).Cleanup(ctx, &buildv1.CleanupRequest{}, grpc.Header(&md))
	case rpcStream:
		var st grpc.ServerStreamingClient[buildv1.BuildEvent]
		if st, err = buildv1.NewBuildClient(conn).WatchBuild(ctx, &buildv1.WatchBuildRequest{}); err == nil {
			if _, err = st.Recv(); err == nil {
				md, err = st.Header()
				if err == nil {
					if _, err = st.Recv(); errors.Is(err, io.EOF) {
						err = nil
					}
				}
			}
		}
	case rpcHealth:
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	case rpcReflection:
		var st grpc.BidiStreamingClient[reflectionpb.ServerReflectionRequest, reflectionpb.ServerReflectionResponse]
		if st, err = reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx); err == nil {
			err = st.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			if err == nil {
				_, err = st.Recv()
			}
		}
	default:
		return nil, fmt.Errorf("unknown rpc %q", rpc)
	}
	if err != nil {
		return nil, err
	}
	if len(md.Get(hdrOK)) != 1 || md.Get(hdrOK)[0] != "true" {
		return nil, nil
	}
	id := &auth.Identity{Name: md.Get(hdrName)[0], Tenant: md.Get(hdrTenant)[0],
		Admin: md.Get(hdrAdmin)[0] == "true", Method: md.Get(hdrMethod)[0]}
	return id, nil
}

// withAuth adds authorization headers to ctx.
func withAuth(ctx context.Context, values ...string) context.Context {
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

func TestInterceptors(t *testing.T) {
	f := newFixture(t)
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }
	ci := &auth.Identity{Name: "ci", Tenant: "team-a", Method: auth.MethodToken}
	deployer := &auth.Identity{Name: "deployer", Tenant: "team-b", Method: auth.MethodMTLS}
	tests := []struct {
		name     string
		plain    bool // plaintext server and client, else TLS
		insecure bool // WithInsecureTokens
		cert     *tls.Certificate
		force    bool     // send cert even if the server asks for another CA's
		authz    []string // authorization header values
		rpc      string
		wantCode codes.Code
		wantMsg  string         // in the status message
		wantID   *auth.Identity // what the handler saw, for codes.OK
	}{
		// Tokens.
		{name: "token unary", authz: bearer(f.tokCI), rpc: rpcUnary, wantID: ci},
		{name: "token stream", authz: bearer(f.tokCI), rpc: rpcStream, wantID: ci},
		{name: "token scheme in lower case", authz: []string{"bearer " + f.tokCI}, rpc: rpcUnary, wantID: ci},
		{name: "token hash stored in upper case", authz: bearer(f.tokOps), rpc: rpcUnary,
			wantID: &auth.Identity{Name: "ops", Admin: true, Method: auth.MethodToken}},
		{name: "wrong token", authz: bearer(f.tokCI + "x"), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "invalid bearer token"},
		{name: "wrong token stream", authz: bearer("nope"), rpc: rpcStream,
			wantCode: codes.Unauthenticated, wantMsg: "invalid bearer token"},
		{name: "no credentials", rpc: rpcUnary, wantCode: codes.Unauthenticated, wantMsg: "no credentials"},
		{name: "no credentials stream", rpc: rpcStream, wantCode: codes.Unauthenticated, wantMsg: "no credentials"},
		{name: "empty bearer", authz: []string{"Bearer  "}, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "empty bearer token"},
		{name: "basic scheme", authz: []string{"Basic " + f.tokCI}, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: `not "Bearer <token>"`},
		{name: "two authorization headers", authz: []string{"Bearer " + f.tokCI, "Bearer " + f.tokCI}, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "more than one authorization header"},
		{name: "token over plaintext refused", plain: true, authz: bearer(f.tokCI), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "no transport security (TLS)"},
		{name: "token over plaintext refused stream", plain: true, authz: bearer(f.tokCI), rpc: rpcStream,
			wantCode: codes.Unauthenticated, wantMsg: "no transport security (TLS)"},
		{name: "token over plaintext allowed", plain: true, insecure: true, authz: bearer(f.tokCI), rpc: rpcUnary, wantID: ci},
		{name: "wrong token over plaintext allowed", plain: true, insecure: true, authz: bearer("nope"), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "invalid bearer token"},

		// Client certificates.
		{name: "cert by CN", cert: f.deployer, rpc: rpcUnary, wantID: deployer},
		{name: "cert by CN stream", cert: f.deployer, rpc: rpcStream, wantID: deployer},
		{name: "cert by SAN URI", cert: f.spiffe, rpc: rpcUnary,
			wantID: &auth.Identity{Name: "spiffe-svc", Tenant: "team-c", Method: auth.MethodMTLS}},
		{name: "cert by SAN DNS, any case", cert: f.dns, rpc: rpcUnary,
			wantID: &auth.Identity{Name: "dns-svc", Tenant: "team-d", Method: auth.MethodMTLS}},
		{name: "cert by SAN email", cert: f.mail, rpc: rpcStream,
			wantID: &auth.Identity{Name: "mail-svc", Tenant: "team-e", Method: auth.MethodMTLS}},
		{name: "cert of the CA matching no caller", cert: f.unknown, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "client certificate matches no caller"},
		{name: "cert of the CA matching no caller stream", cert: f.unknown, rpc: rpcStream,
			wantCode: codes.Unauthenticated, wantMsg: "client certificate matches no caller"},
		{name: "cert with all of the matchers", cert: f.strict, rpc: rpcUnary,
			wantID: &auth.Identity{Name: "strict", Tenant: "team-i", Method: auth.MethodMTLS}},
		{name: "cert with only some of the matchers", cert: f.halfStrict, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "matches no caller"},
		{name: "cert matching two callers", cert: f.ambiguous, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "matches more than one caller"},
		// The client sends no certificate the server's CA did not issue...
		{name: "cert of another CA, not sent", cert: f.untrusted, rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "no credentials"},
		// ... and if it does, the handshake fails: the connection fails.
		{name: "cert of another CA, sent", cert: f.untrusted, force: true, rpc: rpcUnary, wantCode: codes.Unavailable},
		{name: "cert of another CA, sent, with a valid token", cert: f.untrusted, force: true,
			authz: bearer(f.tokCI), rpc: rpcUnary, wantCode: codes.Unavailable},

		// Both.
		{name: "cert and token of the same caller", cert: f.both, authz: bearer(f.tokBoth), rpc: rpcUnary,
			wantID: &auth.Identity{Name: "both", Tenant: "team-f", Method: auth.MethodMTLS}},
		{name: "cert and token disagree", cert: f.deployer, authz: bearer(f.tokCI), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "different callers"},
		{name: "cert and token disagree stream", cert: f.both, authz: bearer(f.tokCI), rpc: rpcStream,
			wantCode: codes.Unauthenticated, wantMsg: "different callers"},
		{name: "unknown cert with a valid token", cert: f.unknown, authz: bearer(f.tokCI), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "matches no caller"},
		{name: "good cert with a wrong token", cert: f.deployer, authz: bearer("nope"), rpc: rpcUnary,
			wantCode: codes.Unauthenticated, wantMsg: "invalid bearer token"},

		// Admin methods.
		{name: "admin method, non-admin token", authz: bearer(f.tokCI), rpc: rpcAdmin,
			wantCode: codes.PermissionDenied, wantMsg: "admin callers only"},
		{name: "admin method, non-admin cert", cert: f.deployer, rpc: rpcAdmin,
			wantCode: codes.PermissionDenied, wantMsg: "admin callers only"},
		{name: "admin method, admin token", authz: bearer(f.tokOps), rpc: rpcAdmin,
			wantID: &auth.Identity{Name: "ops", Admin: true, Method: auth.MethodToken}},
		{name: "admin method, admin cert", cert: f.adminCert, rpc: rpcAdmin,
			wantID: &auth.Identity{Name: "admin-cert", Admin: true, Method: auth.MethodMTLS}},
		{name: "admin method, no credentials", rpc: rpcAdmin, wantCode: codes.Unauthenticated},
		{name: "admin method, wrong token", authz: bearer("nope"), rpc: rpcAdmin, wantCode: codes.Unauthenticated},

		// Public methods: no identity needed, none given, bad credentials ignored.
		{name: "health over plaintext", plain: true, rpc: rpcHealth},
		{name: "health over TLS", rpc: rpcHealth},
		{name: "health with a wrong token", authz: bearer("nope"), rpc: rpcHealth},
		{name: "health with a token over plaintext", plain: true, authz: bearer(f.tokCI), rpc: rpcHealth},
		{name: "health with an unknown cert", cert: f.unknown, rpc: rpcHealth},
		{name: "reflection", plain: true, rpc: rpcReflection},
		{name: "public method gets no identity", authz: bearer(f.tokCI), rpc: rpcOpen, wantID: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis := startServer(t, f, serverSetup{tls: !tt.plain, insecure: tt.insecure})
			conn, err := dial(t, f, lis, clientSetup{tls: !tt.plain, cert: tt.cert, force: tt.force})
			if err != nil {
				t.Fatal(err)
			}
			id, err := call(withAuth(t.Context(), tt.authz...), conn, tt.rpc)
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), tt.wantCode)
			}
			if !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("message %q, want it to contain %q", st.Message(), tt.wantMsg)
			}
			if tt.wantCode != codes.OK {
				return
			}
			switch {
			case tt.wantID == nil && id != nil:
				t.Errorf("handler saw %+v, want no identity", *id)
			case tt.wantID != nil && id == nil:
				t.Errorf("handler saw no identity, want %+v", *tt.wantID)
			case tt.wantID != nil && *id != *tt.wantID:
				t.Errorf("handler saw %+v, want %+v", *id, *tt.wantID)
			}
		})
	}
}

func TestTokenCredentials(t *testing.T) {
	f := newFixture(t)
	ci := &auth.Identity{Name: "ci", Tenant: "team-a", Method: auth.MethodToken}
	tests := []struct {
		name       string
		plain      bool
		insecure   bool
		requireTLS bool
		token      string
		wantErr    bool // the dial or the call fails
		wantID     *auth.Identity
	}{
		{name: "over TLS", requireTLS: true, token: f.tokCI, wantID: ci},
		{name: "over plaintext, not required", plain: true, insecure: true, token: f.tokCI, wantID: ci},
		{name: "over plaintext, TLS required", plain: true, insecure: true, requireTLS: true, token: f.tokCI, wantErr: true},
		{name: "over plaintext, server refuses", plain: true, token: f.tokCI, wantErr: true},
		{name: "empty token", requireTLS: true, token: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis := startServer(t, f, serverSetup{tls: !tt.plain, insecure: tt.insecure})
			conn, err := dial(t, f, lis, clientSetup{tls: !tt.plain, creds: auth.TokenCredentials(tt.token, tt.requireTLS)})
			var id *auth.Identity
			if err == nil {
				id, err = call(t.Context(), conn, rpcUnary)
			}
			if tt.wantErr {
				if err == nil {
					t.Fatalf("call succeeded as %+v, want an error", id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id == nil || *id != *tt.wantID {
				t.Errorf("handler saw %+v, want %+v", id, *tt.wantID)
			}
		})
	}
}

func TestNewOptions(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		callers *auth.Callers
		opts    []auth.Option
		wantErr string
	}{
		{name: "defaults", callers: f.callers},
		{name: "all options", callers: f.callers, opts: []auth.Option{
			auth.WithPublicMethods(auth.HealthMethods, auth.ReflectionMethods),
			auth.WithAdminMethods("/build.v1.AdminService/"),
			auth.WithInsecureTokens(),
			auth.WithLogger(slog.New(slog.DiscardHandler)),
		}},
		{name: "nil callers", wantErr: "no callers"},
		{name: "public prefix without slash", callers: f.callers,
			opts: []auth.Option{auth.WithPublicMethods("grpc.health.v1.Health/")}, wantErr: `public methods: method prefix "grpc.health.v1.Health/"`},
		{name: "empty admin prefix", callers: f.callers,
			opts: []auth.Option{auth.WithAdminMethods("")}, wantErr: "admin methods"},
		{name: "no prefixes", callers: f.callers,
			opts: []auth.Option{auth.WithAdminMethods()}, wantErr: "no method prefixes"},
		{name: "catch-all prefix", callers: f.callers,
			opts: []auth.Option{auth.WithPublicMethods("/")}, wantErr: "method prefix"},
		{name: "nil logger", callers: f.callers, opts: []auth.Option{auth.WithLogger(nil)}, wantErr: "logger is nil"},
		{name: "public and admin overlap", callers: f.callers, opts: []auth.Option{
			auth.WithPublicMethods("/build.v1."), auth.WithAdminMethods("/build.v1.AdminService/"),
		}, wantErr: "cannot be both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := auth.New(tt.callers, tt.opts...)
			if tt.wantErr == "" {
				if err != nil || a == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTokenNeverLeaks presents a secret token in every way that fails (and
// one that succeeds) and checks that neither the statuses the client gets
// nor the server's log, at debug level, nor the token helpers' errors
// contain it.
func TestTokenNeverLeaks(t *testing.T) {
	f := newFixture(t)
	secret := f.tokCI // a valid token: the dangerous one to leak
	unknown := randomToken(t)
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tlsLis := startServer(t, f, serverSetup{tls: true, log: log})
	plainLis := startServer(t, f, serverSetup{log: log})

	var msgs []string
	attempts := []struct {
		plain bool
		cert  *tls.Certificate
		authz []string
		rpc   string
	}{
		{plain: true, authz: []string{"Bearer " + secret}, rpc: rpcUnary},
		{plain: true, authz: []string{"Bearer " + secret}, rpc: rpcStream},
		{authz: []string{"Bearer " + unknown}, rpc: rpcUnary},
		{authz: []string{"Bearer " + unknown}, rpc: rpcStream},
		{authz: []string{"Basic " + secret}, rpc: rpcUnary},
		{authz: []string{secret}, rpc: rpcUnary},
		{authz: []string{"Bearer " + secret, "Bearer " + unknown}, rpc: rpcUnary},
		{cert: f.deployer, authz: []string{"Bearer " + secret}, rpc: rpcUnary},
		{cert: f.unknown, authz: []string{"Bearer " + secret}, rpc: rpcUnary},
		{authz: []string{"Bearer " + secret}, rpc: rpcAdmin},
		{authz: []string{"Bearer " + secret}, rpc: rpcUnary}, // succeeds, logged at debug
	}
	for i, at := range attempts {
		lis := tlsLis
		if at.plain {
			lis = plainLis
		}
		conn, err := dial(t, f, lis, clientSetup{tls: !at.plain, cert: at.cert})
		if err != nil {
			t.Fatal(err)
		}
		_, err = call(withAuth(t.Context(), at.authz...), conn, at.rpc)
		if i < len(attempts)-1 && err == nil {
			t.Errorf("attempt %d succeeded, want it refused", i)
		}
		if err != nil {
			msgs = append(msgs, err.Error(), status.Convert(err).Message())
		}
	}
	// Through TokenCredentials, refused by the plaintext server.
	conn, err := dial(t, f, plainLis, clientSetup{creds: auth.TokenCredentials(secret, false)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call(t.Context(), conn, rpcUnary); err != nil {
		msgs = append(msgs, err.Error())
	} else {
		t.Error("token over plaintext accepted")
	}

	// The client-side helpers.
	creds := auth.TokenCredentials(secret, true)
	msgs = append(msgs, fmt.Sprint(creds), fmt.Sprintf("%v %+v %#v %s", creds, creds, creds, creds))
	dir := t.TempDir()
	for _, file := range []struct {
		data string
		mode uint32
	}{
		{secret + "\n", 0o644},
		{secret + " " + unknown + "\n", 0o600},
		{secret + "\x00", 0o600},
	} {
		path := writeFile(t, dir, "token", []byte(file.data), 0o600)
		chmod(t, path, file.mode)
		if _, err := auth.ReadTokenFile(path); err != nil {
			msgs = append(msgs, err.Error())
		} else {
			t.Errorf("ReadTokenFile accepted %q", file.data)
		}
	}

	if !strings.Contains(logBuf.String(), "call refused") || !strings.Contains(logBuf.String(), "call authenticated") {
		t.Fatalf("the log lacks the refusals or the success:\n%s", logBuf.String())
	}
	for _, s := range append(msgs, logBuf.String()) {
		for _, tok := range []string{secret, unknown} {
			if strings.Contains(s, tok) {
				t.Errorf("token leaked in %q", s)
			}
		}
	}
}
