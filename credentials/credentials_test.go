package credentials

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/secrets"
	"github.com/moby/buildkit/session/sshforward"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/buildsvc/buildsvc/llb"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"git.internal.example", "git.internal.example", true},
		{"git.internal.example", "GIT.internal.example:8443", true},
		{"git.internal.example:8443", "git.internal.example:8443", true},
		{"git.internal.example:8443", "git.internal.example", false},
		{"git.internal.example:8443", "git.internal.example:443", false},
		{"git.internal.example", "evilgit.internal.example", false},
		{"git.internal.example", "git.internal.example.evil", false},
		{"*.corp.example", "a.corp.example", true},
		{"*.corp.example", "a.b.corp.example:22", true},
		{"*.corp.example", "corp.example", false},
		{"*.corp.example", "evilcorp.example", false},
		{"127.0.0.1", "127.0.0.1:443", true},
		{"[::1]:22", "[::1]:22", true},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.host); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testKey(t *testing.T) []byte {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(b)
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	tok := writeFile(t, dir, "token", "  tok3n\n")
	key := writeFile(t, dir, "key", string(testKey(t)))
	good := writeFile(t, dir, "good.yaml", `hosts:
  - host: git.internal.example
    password_file: `+tok+`
  - host: "*.corp.example"
    username: builder
    password_file: `+tok+`
    ssh_key_file: `+key+`
    tenants: [payments]
`)
	rules, err := LoadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{Rules: rules}
	g, ok := c.Git("dev", "git.internal.example:443")
	if !ok || g.Username != DefaultUsername || g.Password != "tok3n" || len(g.SSHKey) != 0 {
		t.Errorf("git.internal.example: %+v %v", g, ok)
	}
	if _, ok := c.Git("dev", "a.corp.example"); ok {
		t.Error("a rule of tenant payments matched for dev")
	}
	if g, ok := c.Git("payments", "a.corp.example"); !ok || g.Username != "builder" || len(g.SSHKey) == 0 {
		t.Errorf("a.corp.example for payments: %+v %v", g, ok)
	}
	// netrc entries: exact hosts only, and only the tenant's.
	var hosts []string
	for _, m := range c.Modules("payments") {
		hosts = append(hosts, m.Host)
	}
	if !slices.Equal(hosts, []string{"git.internal.example"}) {
		t.Errorf("module hosts = %v", hosts)
	}
	if !c.TenantModules("payments") || c.TenantModules("dev") {
		t.Errorf("TenantModules: payments %v, dev %v", c.TenantModules("payments"), c.TenantModules("dev"))
	}

	for name, content := range map[string]string{
		"unknown field": "hosts:\n  - host: a.example\n    token: x\n",
		"no secret":     "hosts:\n  - host: a.example\n",
		"bad pattern":   "hosts:\n  - host: a/b\n    password_file: " + tok + "\n",
		"missing file":  "hosts:\n  - host: a.example\n    password_file: " + dir + "/nope\n",
		"bad key":       "hosts:\n  - host: a.example\n    ssh_key_file: " + tok + "\n",
	} {
		if _, err := LoadFile(writeFile(t, dir, "bad.yaml", content)); err == nil {
			t.Errorf("%s: loaded", name)
		} else if strings.Contains(err.Error(), "tok3n") {
			t.Errorf("%s: error quotes the secret: %v", name, err)
		}
	}
}

func TestProxyCredentials(t *testing.T) {
	tests := []struct {
		in, want string
		mods     []Module
	}{
		{"", "", nil},
		{"https://proxy.golang.org,direct", "https://proxy.golang.org,direct", nil},
		{"https://u:p%40ss@athens.internal:3000|https://proxy.golang.org,off",
			"https://athens.internal:3000|https://proxy.golang.org,off",
			[]Module{{Host: "athens.internal", Username: "u", Password: "p@ss", From: "server GOPROXY"}}},
	}
	for _, tt := range tests {
		got, mods := ProxyCredentials(tt.in)
		if got != tt.want || !slices.Equal(mods, tt.mods) {
			t.Errorf("ProxyCredentials(%q) = %q, %v; want %q, %v", tt.in, got, mods, tt.want, tt.mods)
		}
	}
}

func TestBuildSecretsAndValues(t *testing.T) {
	b := &Build{
		Host: "git.internal.example", RepoHost: "git.internal.example",
		Git:        Git{Username: "bot", Password: "gitpass1", From: "request"},
		Modules:    []Module{{Host: "mods.example", Username: "m", Password: "modpass1"}, {Host: "MODS.example", Username: "m2", Password: "second"}},
		Registries: []Registry{{Host: "docker.io", Username: "r", Password: "regpass1"}},
		SecretEnv:  map[string]string{"B": "envval2", "A": "envval1"},
	}
	sec := b.Secrets()
	if got := string(sec["GIT_AUTH_HEADER.git.internal.example"]); got != "basic Ym90OmdpdHBhc3Mx" {
		t.Errorf("git header = %q", got)
	}
	if got := string(sec[llb.NetrcSecretID]); got != "machine mods.example\nlogin m\npassword modpass1\n" {
		t.Errorf("netrc = %q (the first entry of a host wins)", got)
	}
	if string(sec[SecretEnvID("A")]) != "envval1" || !slices.Equal(b.SecretEnvNames(), []string{"A", "B"}) {
		t.Errorf("secret env: %v %v", sec, b.SecretEnvNames())
	}
	vals := b.Values()
	for _, want := range []string{"gitpass1", "basic Ym90OmdpdHBhc3Mx", "Ym90OmdpdHBhc3Mx", "modpass1", "regpass1", "envval1", "envval2"} {
		if !slices.Contains(vals, want) {
			t.Errorf("Values lacks %q: %q", want, vals)
		}
	}
	given := strings.Join(Given(b), "; ")
	for _, v := range vals {
		if strings.Contains(given, v) {
			t.Errorf("Given %q shows %q", given, v)
		}
	}
	for _, want := range []string{"git: https password for user bot (request)", "registry docker.io: password for user r", "secret_env A"} {
		if !strings.Contains(given, want) {
			t.Errorf("Given %q lacks %q", given, want)
		}
	}
}

func TestRegistryAuth(t *testing.T) {
	docker := configfile.New("")
	docker.AuthConfigs = map[string]types.AuthConfig{
		"127.0.0.1:5000":              {Username: "server", Password: "serverpass"},
		"https://index.docker.io/v1/": {Username: "hub-server", Password: "x"},
		"registry.team.example":       {Username: "server", Password: "y"},
	}
	b := &Build{Registries: []Registry{{Host: "registry.team.example", Username: "team", Password: "teampass"}, {Host: "docker.io", IdentityToken: "tok"}}}
	auth := b.registryAuth(docker)
	for host, want := range map[string]string{
		"127.0.0.1:5000":        "server",
		"registry.team.example": "team",
		"registry-1.docker.io":  "", // the identity token
	} {
		ac, err := auth(context.Background(), host, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ac.Username != want {
			t.Errorf("%s: user %q, want %q", host, ac.Username, want)
		}
	}
	if ac, _ := auth(context.Background(), "registry-1.docker.io", nil, nil); ac.IdentityToken != "tok" {
		t.Errorf("docker hub: %+v", ac)
	}
}

// TestAgent forwards the build's agent over a real gRPC connection, as
// buildkitd does, and signs with it: the key never leaves, and the agent
// refuses every change.
func TestAgent(t *testing.T) {
	key := testKey(t)
	b := &Build{Git: Git{SSHKey: key}, SecretEnv: map[string]string{"X": "xval"}}
	atts, err := b.Attachables(nil)
	if err != nil {
		t.Fatal(err)
	}
	cc := serveSession(t, atts)
	ctx := context.Background()

	// Secrets: served by id; an unknown id is ErrNotFound.
	if _, err := secrets.GetSecret(ctx, staticCaller{cc}, "nope"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("an unknown secret: %v", err)
	}

	if v, err := secrets.GetSecret(ctx, staticCaller{cc}, SecretEnvID("X")); err != nil || string(v) != "xval" {
		t.Errorf("secret X: %q %v", v, err)
	}

	c := sshforward.NewSSHClient(cc)
	if _, err := c.CheckAgent(ctx, &sshforward.CheckAgentRequest{ID: "other"}); err == nil {
		t.Error("CheckAgent accepted an unknown id")
	}
	if _, err := c.CheckAgent(ctx, &sshforward.CheckAgentRequest{ID: llb.GitSSHID}); err != nil {
		t.Fatal(err)
	}
	sctx := metadata.AppendToOutgoingContext(ctx, sshforward.KeySSHID, llb.GitSSHID)
	stream, err := c.ForwardAgent(sctx)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := net.Pipe()
	go func() { _ = sshforward.Copy(ctx, theirs, stream, stream.CloseSend) }()
	ag := agent.NewClient(ours)
	keys, err := ag.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List: %v %v", keys, err)
	}
	signer, _ := ssh.ParsePrivateKey(key)
	if string(keys[0].Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Error("the agent holds another key")
	}
	sig, err := ag.Sign(keys[0], []byte("data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.PublicKey().Verify([]byte("data"), sig); err != nil {
		t.Errorf("signature: %v", err)
	}
	if err := ag.RemoveAll(); err == nil {
		t.Error("the agent let its keys be removed")
	}
	ours.Close()
}

// staticCaller is a session.Caller on one connection.
type staticCaller struct{ cc *grpc.ClientConn }

func (c staticCaller) Supports(string) bool                        { return true }
func (c staticCaller) Conn() *grpc.ClientConn                      { return c.cc }
func (c staticCaller) Context(ctx context.Context) context.Context { return ctx }
func (c staticCaller) SharedKey() string                           { return "" }

// TestSockets forwards a raw socket beside the git agent, as buildkitd
// forwards a step's llb.AddSSHSocket: the bytes reach the socket's Serve
// and its answer comes back; ids are distinct.
func TestSockets(t *testing.T) {
	echo := Socket{ID: "echo", Serve: func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(append([]byte("got "), buf...))
		}
	}}
	b := &Build{Git: Git{SSHKey: testKey(t)}}
	if _, err := b.Attachables(nil, echo, echo); err == nil {
		t.Error("two sockets with one id were accepted")
	}
	if _, err := b.Attachables(nil, Socket{ID: llb.GitSSHID, Serve: echo.Serve}); err == nil {
		t.Error("a socket with the git agent's id was accepted")
	}
	atts, err := b.Attachables(nil, echo)
	if err != nil {
		t.Fatal(err)
	}
	cc := serveSession(t, atts)
	ctx := context.Background()
	c := sshforward.NewSSHClient(cc)
	for _, id := range []string{"echo", llb.GitSSHID} {
		if _, err := c.CheckAgent(ctx, &sshforward.CheckAgentRequest{ID: id}); err != nil {
			t.Errorf("CheckAgent %s: %v", id, err)
		}
	}
	stream, err := c.ForwardAgent(metadata.AppendToOutgoingContext(ctx, sshforward.KeySSHID, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := net.Pipe()
	go func() { _ = sshforward.Copy(ctx, theirs, stream, stream.CloseSend) }()
	if _, err := ours.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	if _, err := io.ReadFull(ours, got); err != nil || string(got) != "got hello" {
		t.Errorf("read %q, %v; want %q", got, err, "got hello")
	}
	ours.Close()
}

// serveSession serves the attachables over a real gRPC connection, as a
// BuildKit session does, and returns the client end.
func serveSession(t *testing.T, atts []session.Attachable) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer()
	for _, a := range atts {
		a.Register(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
