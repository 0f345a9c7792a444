package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/ssh"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/llb"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// secretValue is in every secret field of the requests below; no error
// may quote it.
const secretValue = "s3cr3t-VALUE-never-shown"

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

func TestParseCredentials(t *testing.T) {
	key := testKey(t)
	valid := func() *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: "https://git.internal.example/team/app.git", ImageTag: "registry.example/a:b"}
	}
	tests := []struct {
		name      string
		mutate    func(r *buildv1.CreateImageRequest)
		wantField string
	}{
		{"token", func(r *buildv1.CreateImageRequest) {
			r.GitCredentials = &buildv1.GitCredentials{Password: secretValue}
		}, ""},
		{"ssh key and known hosts", func(r *buildv1.CreateImageRequest) {
			r.GitRepo = "ssh://git@git.internal.example/team/app.git"
			r.GitCredentials = &buildv1.GitCredentials{SshPrivateKey: key,
				SshKnownHosts: []byte("# comment\ngit.internal.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")}
		}, ""},
		{"username without password", func(r *buildv1.CreateImageRequest) {
			r.GitCredentials = &buildv1.GitCredentials{Username: "bob"}
		}, "git_credentials.password"},
		{"bad key", func(r *buildv1.CreateImageRequest) {
			r.GitCredentials = &buildv1.GitCredentials{SshPrivateKey: []byte(secretValue)}
		}, "git_credentials.ssh_private_key"},
		{"bad known hosts", func(r *buildv1.CreateImageRequest) {
			r.GitCredentials = &buildv1.GitCredentials{SshKnownHosts: []byte("host " + secretValue)}
		}, "git_credentials.ssh_known_hosts"},
		{"password too long", func(r *buildv1.CreateImageRequest) {
			r.GitCredentials = &buildv1.GitCredentials{Password: strings.Repeat(secretValue, 1000)}
		}, "git_credentials.password"},
		{"registry", func(r *buildv1.CreateImageRequest) {
			r.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "127.0.0.1:5001", Username: "team", Password: secretValue}, {Registry: "docker.io", IdentityToken: secretValue}}
		}, ""},
		{"registry with a path", func(r *buildv1.CreateImageRequest) {
			r.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "registry.example/team", Username: "u", Password: secretValue}}
		}, "registry_credentials[0].registry"},
		{"registry twice", func(r *buildv1.CreateImageRequest) {
			r.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "r.example", Username: "u", Password: "p1"}, {Registry: "r.example", Username: "u", Password: secretValue}}
		}, "registry_credentials[1].registry"},
		{"registry without password", func(r *buildv1.CreateImageRequest) {
			r.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "r.example", Username: "u"}}
		}, "registry_credentials[0]"},
		{"module host with port", func(r *buildv1.CreateImageRequest) {
			r.ModuleCredentials = []*buildv1.ModuleCredentials{{Host: "proxy.example:8443", Username: "u", Password: secretValue}}
		}, "module_credentials[0].host"},
		{"module password with a space", func(r *buildv1.CreateImageRequest) {
			r.ModuleCredentials = []*buildv1.ModuleCredentials{{Host: "proxy.example", Username: "u", Password: secretValue + " x"}}
		}, "module_credentials[0].password"},
		{"goprivate", func(r *buildv1.CreateImageRequest) { r.Goprivate = "git.internal.example,*.corp.example/x" }, ""},
		{"goprivate with a space", func(r *buildv1.CreateImageRequest) { r.Goprivate = "a b" }, "goprivate"},
		{"secret env allowed", func(r *buildv1.CreateImageRequest) { r.SecretEnv = map[string]string{"GOEXPERIMENT": "rangefunc"} }, ""},
		{"secret env not on the allow-list", func(r *buildv1.CreateImageRequest) { r.SecretEnv = map[string]string{"API_TOKEN": secretValue} }, "secret_env[API_TOKEN]"},
		{"secret env reserved", func(r *buildv1.CreateImageRequest) { r.SecretEnv = map[string]string{"HOME": secretValue} }, "secret_env[HOME]"},
		{"secret env also in env", func(r *buildv1.CreateImageRequest) {
			r.Env = map[string]string{"GOEXPERIMENT": "a"}
			r.SecretEnv = map[string]string{"GOEXPERIMENT": secretValue}
		}, "secret_env[GOEXPERIMENT]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			tt.mutate(req)
			r, err := parseRequest(req, Config{BaseImage: "base.example/static:1", DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if p := r.proto(); strings.Contains(p.String(), secretValue) || p.GitCredentials != nil || p.RegistryCredentials != nil || p.SecretEnv != nil {
					t.Errorf("the accepted request keeps a credential: %v", p)
				}
				return
			}
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != tt.wantField {
				t.Fatalf("want *FieldError for %s, got %T %v", tt.wantField, err, err)
			}
			if strings.Contains(err.Error(), secretValue[:8]) {
				t.Errorf("error quotes the secret: %v", err)
			}
		})
	}
}

func TestBuildCredentials(t *testing.T) {
	key := testKey(t)
	known := []byte("[git.internal.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
	cfg := &credentials.Config{
		Rules: []credentials.Rule{},
	}
	s := &Server{cfg: Config{Credentials: cfg, GoProxy: "https://mod:" + secretValue + "@proxy.internal,https://proxy.golang.org,direct"}}
	parse := func(req *buildv1.CreateImageRequest) *request {
		t.Helper()
		req.ImageTag = "registry.example/a:b"
		r, err := parseRequest(req, Config{DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// https with the request's token: the git secret of its host, a netrc
	// entry for the host (modules from it) and for the proxy.
	r := parse(&buildv1.CreateImageRequest{GitRepo: "https://git.internal.example:8443/team/app.git",
		GitCredentials: &buildv1.GitCredentials{Password: secretValue}})
	b, err := s.buildCredentials("dev", r)
	if err != nil {
		t.Fatal(err)
	}
	sec := b.Secrets()
	if _, ok := sec[credentials.GitAuthSecretID("git.internal.example:8443")]; !ok || len(b.Git.SSHKey) != 0 {
		t.Errorf("secrets %v lack the git header of the host:port", keys(sec))
	}
	netrc := string(b.Netrc())
	for _, want := range []string{"machine git.internal.example\nlogin x-access-token\npassword " + secretValue, "machine proxy.internal\nlogin mod\npassword " + secretValue} {
		if !strings.Contains(netrc, want) {
			t.Errorf("netrc lacks %q", want)
		}
	}
	if got := credentials.Given(b); len(got) != 1 || !strings.Contains(got[0], "https password for user x-access-token (request)") {
		t.Errorf("given = %q", got)
	}

	// ssh without a key, then without known hosts: refused, naming the field.
	r = parse(&buildv1.CreateImageRequest{GitRepo: "ssh://git@git.internal.example:2222/team/app.git"})
	if _, err := s.buildCredentials("dev", r); err == nil || !strings.HasPrefix(err.Error(), "git_credentials.ssh_private_key:") {
		t.Errorf("ssh without a key: %v", err)
	}
	r = parse(&buildv1.CreateImageRequest{GitRepo: "ssh://git@git.internal.example:2222/team/app.git",
		GitCredentials: &buildv1.GitCredentials{SshPrivateKey: key}})
	if _, err := s.buildCredentials("dev", r); err == nil || !strings.HasPrefix(err.Error(), "git_credentials.ssh_known_hosts:") {
		t.Errorf("ssh without known hosts: %v", err)
	}
	cfg.KnownHosts = known
	b, err = s.buildCredentials("dev", r)
	if err != nil {
		t.Fatal(err)
	}
	if string(b.KnownHosts) != string(known) || len(b.Git.SSHKey) == 0 {
		t.Errorf("ssh build credentials: %+v", b)
	}
	if _, ok := b.Secrets()[credentials.GitAuthSecretID(b.RepoHost)]; ok {
		t.Error("an ssh build has a git https secret")
	}
	for _, v := range b.Values() {
		if strings.Contains(v, "BEGIN OPENSSH") {
			return
		}
	}
	t.Error("Values lacks the ssh key")
}

func keys(m map[string][]byte) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	return k
}

// A build that fetches modules straight from their hosts (GOPRIVATE, the
// server's or the request's) has its tenant's own module cache; others
// share the server's.
func TestPrivateModulesHaveTheTenantsCache(t *testing.T) {
	for _, tt := range []struct {
		name            string
		server, request string
		want            string
	}{
		{"public", "", "", ""},
		{"request goprivate", "", "git.internal.example", "buildsvc-gomodcache-tenant-dev"},
		{"server goprivate", "*.corp.example", "", "buildsvc-gomodcache-tenant-dev"},
		{"request module credentials", "", "creds", "buildsvc-gomodcache-tenant-dev"},
	} {
		s := &Server{cfg: Config{Credentials: &credentials.Config{GoPrivate: tt.server}}}
		r := &request{GoPrivate: tt.request}
		if tt.request == "creds" {
			r = &request{creds: &requestCredentials{modules: []credentials.Module{{Host: "athens.internal", Username: "u", Password: "p"}}}}
		}
		mod, build := s.buildCacheIDs("dev", r)
		if mod != tt.want || build != "buildsvc-gocache-tenant-dev" {
			t.Errorf("%s: cache ids %q, %q; want module cache %q", tt.name, mod, build, tt.want)
		}
	}
}

// The server's GOPROXY credentials never go into a build's environment:
// the spec's GOPROXY has no user info, and the netrc has it.
func TestProxyCredentialsStayOutOfTheEnvironment(t *testing.T) {
	s := &Server{cfg: Config{GoProxy: "https://mod:" + secretValue + "@athens.internal,https://proxy.golang.org,direct"}}
	r, err := parseRequest(&buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "r.example/a:b"},
		Config{DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := s.buildCredentials("", r)
	if err != nil {
		t.Fatal(err)
	}
	spec := s.spec("", r, creds, strings.Repeat("a", 40), ocispecs.Platform{OS: "linux", Architecture: "amd64"}, llb.Image{Ref: "b"}, llb.Image{Ref: "c"})
	if spec.GoProxy != "https://athens.internal,https://proxy.golang.org,direct" || !spec.Netrc {
		t.Errorf("spec GOPROXY %q, netrc %v", spec.GoProxy, spec.Netrc)
	}
	if !strings.Contains(string(creds.Netrc()), "machine athens.internal\nlogin mod\npassword "+secretValue) {
		t.Errorf("netrc %q lacks the proxy's credentials", creds.Netrc())
	}
	res, err := llb.Build(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range res.Definition.Def {
		if strings.Contains(string(dt), secretValue) {
			t.Fatal("the graph holds the proxy's password")
		}
	}
}
