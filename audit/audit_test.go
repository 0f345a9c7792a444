package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/buildsvc/buildsvc/auth"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// fakeBuild answers GetBuild, CancelBuild, StartBuild and WatchBuild.
type fakeBuild struct {
	buildv1.UnimplementedBuildServer
}

func (fakeBuild) GetBuild(_ context.Context, r *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	if r.GetBuildId() == "missing" {
		return nil, status.Error(codes.NotFound, "build \"missing\": build not found")
	}
	return &buildv1.BuildInfo{BuildId: r.GetBuildId()}, nil
}

func (fakeBuild) StartBuild(context.Context, *buildv1.StartBuildRequest) (*buildv1.StartBuildResponse, error) {
	return &buildv1.StartBuildResponse{BuildId: "new-build"}, nil
}

func (fakeBuild) WatchBuild(r *buildv1.WatchBuildRequest, s buildv1.Build_WatchBuildServer) error {
	return s.Send(&buildv1.BuildEvent{BuildId: r.GetBuildId()})
}

// fakeAuth lets in the callers named by the "who" metadata.
func fakeAuth(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	switch strings.Join(md.Get("who"), "") {
	case "alice":
		return auth.NewContext(ctx, auth.Identity{Name: "alice", Tenant: "team-a", Method: auth.MethodToken}), nil
	case "":
		return nil, status.Error(codes.Unauthenticated, "no credentials")
	}
	return nil, status.Error(codes.Unauthenticated, "unknown caller")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) records(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func TestEveryCallIsLogged(t *testing.T) {
	var buf syncBuffer
	a := New(slog.New(slog.NewJSONHandler(&buf, nil)))
	unaryAuth := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := fakeAuth(ctx)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	streamAuth := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := fakeAuth(ss.Context())
		if err != nil {
			return err
		}
		return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(a.UnaryInterceptor(), unaryAuth, a.UnaryIdentity()),
		grpc.ChainStreamInterceptor(a.StreamInterceptor(), streamAuth, a.StreamIdentity()),
	)
	buildv1.RegisterBuildServer(gs, fakeBuild{})
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := buildv1.NewBuildClient(conn)
	as := func(who string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "who", who)
	}
	const secret = "hunter2-in-a-url"
	c.GetBuild(as("alice"), &buildv1.GetBuildRequest{BuildId: "b1"})
	c.GetBuild(as("alice"), &buildv1.GetBuildRequest{BuildId: "missing"})
	c.GetBuild(as("mallory"), &buildv1.GetBuildRequest{BuildId: "b1"})
	c.StartBuild(as("alice"), &buildv1.StartBuildRequest{Request: &buildv1.CreateImageRequest{GitRepo: "https://u:" + secret + "@git.example/x.git"}})
	c.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: &buildv1.CreateImageRequest{GitRepo: "https://u:" + secret + "@git.example/x.git"}})
	ws, err := c.WatchBuild(as("alice"), &buildv1.WatchBuildRequest{BuildId: "b2"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ws.Recv(); err != nil {
			break
		}
	}
	gs.GracefulStop()

	want := []struct{ method, code, caller, tenant, build string }{
		{"/build.v1.Build/GetBuild", "OK", "alice", "team-a", "b1"},
		{"/build.v1.Build/GetBuild", "NotFound", "alice", "team-a", "missing"},
		{"/build.v1.Build/GetBuild", "Unauthenticated", "", "", "b1"},
		{"/build.v1.Build/StartBuild", "OK", "alice", "team-a", "new-build"},
		{"/build.v1.Build/StartBuild", "Unauthenticated", "", "", ""},
		{"/build.v1.Build/WatchBuild", "OK", "alice", "team-a", "b2"},
	}
	recs := buf.records(t)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d:\n%v", len(recs), len(want), recs)
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	for i, w := range want {
		r := recs[i]
		if str(r, "method") != w.method || str(r, "code") != w.code || str(r, "caller") != w.caller ||
			str(r, "tenant") != w.tenant || str(r, "build") != w.build || str(r, "peer") == "" {
			t.Errorf("record %d = %v, want %+v", i, r, w)
		}
		if (w.code != "OK") != (r["level"] == "WARN") {
			t.Errorf("record %d level %v for code %s", i, r["level"], w.code)
		}
	}
	buf.mu.Lock()
	defer buf.mu.Unlock()
	if strings.Contains(buf.b.String(), secret) {
		t.Errorf("the audit log holds a request's secret:\n%s", buf.b.String())
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
