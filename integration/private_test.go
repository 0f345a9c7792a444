//go:build integration

package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/metrics"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// private is the private part of the stack (scripts/up.sh): a git smart
// HTTP server over TLS with basic auth and an sshd with git-shell, both
// serving .stack/git-private, a CA of their own, and a second registry
// over TLS whose credentials the server does not have.
type private struct {
	CA                                 []byte
	CAFile                             string
	HTTPSURL, User, Token, TokenFile   string
	SSHURL, SSHPort                    string
	SSHKey, KnownHosts, KnownHostsFile []byte
	KnownHostsWrong                    []byte
	Registry2, Registry2User           string
	Registry2Password                  string
	// Dir is the directory both serve.
	Dir string
}

func loadPrivate(t testing.TB) private {
	t.Helper()
	read := func(env string) []byte {
		t.Helper()
		p := os.Getenv(env)
		if p == "" {
			t.Fatalf("%s is not set: run the integration tests with `make test`, which starts the stack and sources .stack/env", env)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p := private{
		CA: read("INTERNAL_CA"), CAFile: os.Getenv("INTERNAL_CA"),
		HTTPSURL: os.Getenv("GIT_HTTPS_URL"), User: os.Getenv("GIT_HTTPS_USER"),
		Token: strings.TrimSpace(string(read("GIT_HTTPS_TOKEN_FILE"))), TokenFile: os.Getenv("GIT_HTTPS_TOKEN_FILE"),
		SSHURL: os.Getenv("GIT_SSH_URL"), SSHPort: os.Getenv("SSH_PORT"),
		SSHKey: read("GIT_SSH_KEY"), KnownHosts: read("GIT_SSH_KNOWN_HOSTS"), KnownHostsWrong: read("GIT_SSH_KNOWN_HOSTS_WRONG"),
		Registry2: os.Getenv("REGISTRY2_ADDR"), Registry2User: os.Getenv("REGISTRY2_USER"),
		Registry2Password: strings.TrimSpace(string(read("REGISTRY2_PASSWORD_FILE"))),
		Dir:               os.Getenv("GIT_PRIVATE_DIR"),
	}
	if p.HTTPSURL == "" || p.SSHURL == "" || p.Dir == "" || p.Registry2 == "" || len(p.Token) < 16 {
		t.Fatal("the stack's private git hosts or second registry are not in .stack/env; run scripts/up.sh")
	}
	return p
}

// plainFiles are a main package with no dependencies.
func plainFiles(t testing.TB) map[string]string {
	return map[string]string{
		"go.mod":  "module example.com/plain\n\ngo 1.22\n",
		"main.go": fmt.Sprintf("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"private-plain ok\") }\n\n// %s %d\n", t.Name(), time.Now().UnixNano()),
	}
}

// newPrivateRepo makes a repository of the test's own that the private git
// servers serve: its commit is new, so BuildKit must fetch it (with the
// build's credentials) rather than reuse a fetch of its cache. It returns
// the https and the ssh URL.
func (p private) newPrivateRepo(t testing.TB, files map[string]string) (httpsURL, sshURL string) {
	t.Helper()
	r := newRepoIn(t, files, "", p.Dir, p.HTTPSURL)
	return r.URL, p.SSHURL + strings.TrimPrefix(r.URL, p.HTTPSURL)
}

// serverRules is a server credentials file for the https host, read the way
// the server reads --git-credentials.
func (p private) serverRules(t testing.TB) []credentials.Rule {
	t.Helper()
	f := filepath.Join(t.TempDir(), "git-credentials.yaml")
	if err := os.WriteFile(f, []byte("hosts:\n  - host: 127.0.0.1\n    password_file: "+p.TokenFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := credentials.LoadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// requireRefused checks that a build was refused with code before anything
// was recorded or solved, with a message that has every one of want.
func requireRefused(t testing.TB, c buildv1.BuildClient, o outcome, code codes.Code, want ...string) string {
	t.Helper()
	return requireRefusedAfter(t, c, o, 0, code, want...)
}

// A private repository over https, with the server's credentials for its
// host: it builds and runs. Without them the request is refused as
// Unauthenticated, naming the host, before anything is recorded or solved.
func TestPrivateHTTPSServerCredentials(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	with := startServer(t, func(c *server.Config) {
		c.Credentials = &credentials.Config{Rules: p.serverRules(t), CABundle: p.CA}
	})
	repo, _ := p.newPrivateRepo(t, plainFiles(t))
	req := &buildv1.CreateImageRequest{GitRepo: repo, ImageTag: tagFor(t, "server-token")}
	res := requireSuccess(t, build(t, with, req))
	if out := runEntrypoint(t, pushedImage(t, res.Image)); !strings.Contains(out, "private-plain ok") {
		t.Errorf("binary printed %q", out)
	}

	without := startServer(t, func(c *server.Config) { c.Credentials = &credentials.Config{CABundle: p.CA} })
	requireRefused(t, without, build(t, without, req), codes.Unauthenticated, "git_repo: 127.0.0.1 wants credentials", "the request gave none")
}

// The private app imports a private module straight from the https git host
// (GOPRIVATE, not through the proxy), with the request's token, which also
// serves as the module host's credential, and the server's internal CA,
// which go and git in the builder trust. The token appears in no output of
// the service; GetBuild says a token was given, not which. A wrong token is
// refused as Unauthenticated, naming the host and the kind of credential.
func TestPrivateModuleRequestToken(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	reg := metrics.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	ns := cacheNamespace(t)
	ts := startTestServer(t, func(c *server.Config) {
		c.Credentials = &credentials.Config{CABundle: p.CA}
		c.Observer = m
		c.CacheNamespace = ns // a module cache without the private module
	})
	app := readDir(t, "../testdata/privateapp")
	app["main.go"] += fmt.Sprintf("\n// %s %d\n", t.Name(), time.Now().UnixNano())
	repo, _ := p.newPrivateRepo(t, app)
	req := &buildv1.CreateImageRequest{
		GitRepo: repo, ImageTag: tagFor(t, "request-token"),
		GitCredentials: &buildv1.GitCredentials{Password: p.Token},
		Goprivate:      "127.0.0.1",
	}
	o := build(t, ts.Client, req)
	res := requireSuccess(t, o)
	img := pushedImage(t, res.Image)
	if out := runEntrypoint(t, img); !strings.Contains(out, "privateapp: hello from privmod") {
		t.Errorf("binary printed %q", out)
	}
	id := o.events[0].GetBuildId()
	info, err := ts.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	if given := strings.Join(info.GetCredentialsGiven(), "; "); !strings.Contains(given, "git: https password for user x-access-token (request)") {
		t.Errorf("credentials_given = %q", given)
	}
	if info.GetRequest().GetGitCredentials() != nil {
		t.Error("the stored request keeps its git credentials")
	}

	wrong := cloneRequest(req)
	wrong.GitCredentials = &buildv1.GitCredentials{Password: p.Token[:8] + "-wrong-" + p.Token[8:]}
	msg := requireRefusedAfter(t, ts.Client, build(t, ts.Client, wrong), 1, codes.Unauthenticated,
		"git_repo: 127.0.0.1 did not accept the https password for user x-access-token (request)")

	outputs := map[string][]byte{
		"streamed events":            eventsText(o.events),
		"stored events (WatchBuild)": eventsText(watchAll(t, ts.Client, id, 0)),
		"the wrong token's error":    []byte(msg),
	}
	b, _ := protojson.Marshal(info)
	outputs["build record"] = b
	list, err := ts.Client.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = protojson.Marshal(list)
	outputs["ListBuilds"] = b
	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()
	outputs["metrics"] = scrapeText(t, hs.URL+"/metrics")
	outputs["image"] = imageBytes(t, img)
	ts.Stop()
	outputs["server log"] = []byte(ts.Log.String())
	hist, err := os.ReadFile(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs["history file"] = hist
	if !bytes.Contains(hist, []byte("go mod download")) || !bytes.Contains(hist, []byte(repo)) {
		t.Fatal("the history file does not hold the build's record and events, so looking for the token in it proves nothing")
	}
	secrets := map[string]string{
		"token": p.Token, "the wrong token": wrong.GitCredentials.Password,
		"the basic auth": base64.StdEncoding.EncodeToString([]byte("x-access-token:" + p.Token)),
	}
	for where, text := range outputs {
		for what, secret := range secrets {
			if i := bytes.Index(text, []byte(secret)); i >= 0 {
				t.Errorf("%s holds %s: ...%q...", where, what, text[max(0, i-60):min(len(text), i+len(secret)+20)])
			}
		}
	}
}

// requireRefusedAfter is requireRefused on a server that had recorded
// builds builds before.
func requireRefusedAfter(t testing.TB, c buildv1.BuildClient, o outcome, builds int, code codes.Code, want ...string) string {
	t.Helper()
	st, _ := status.FromError(o.err)
	if st.Code() != code {
		t.Fatalf("status %v %q, want %v", st.Code(), st.Message(), code)
	}
	for _, w := range want {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("message %q lacks %q", st.Message(), w)
		}
	}
	if len(o.events) > 0 {
		t.Errorf("a refused build streamed %d events", len(o.events))
	}
	list, err := c.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Builds) != builds {
		t.Errorf("%d builds recorded, want %d: the refused request was recorded", len(list.Builds), builds)
	}
	return st.Message()
}

// cacheNamespace is a cache namespace of the test's own: Go caches that no
// other build has filled.
func cacheNamespace(t testing.TB) string {
	return fmt.Sprintf("it%d", time.Now().UnixNano())
}

// cloneRequest copies a request.
func cloneRequest(r *buildv1.CreateImageRequest) *buildv1.CreateImageRequest {
	return proto.Clone(r).(*buildv1.CreateImageRequest)
}

// The app on the (public) git daemon imports the private module from the
// https host: with the server's GOPRIVATE, its credentials for the host and
// its internal CA, it builds; without the CA, go in the builder fails the
// TLS handshake with the module host, and the build fails with an error
// that says so (go itself says only that no protocol worked).
func TestPrivateModuleNeedsCA(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	app := newRepo(t, readDir(t, "../testdata/privateapp"))
	req := &buildv1.CreateImageRequest{GitRepo: app.URL, GitCommit: "main", ImageTag: tagFor(t, "ca")}

	// One module cache for both servers, new to this test: the first build
	// must fetch the private module (and fails to), the second fetches it.
	ns := cacheNamespace(t)
	without := startServer(t, func(c *server.Config) {
		c.Credentials = &credentials.Config{Rules: p.serverRules(t), GoPrivate: "127.0.0.1"}
		c.CacheNamespace = ns
	})
	o := build(t, without, req)
	be := o.buildErr()
	if be == nil {
		t.Fatalf("the build without the CA did not fail: %v", o.err)
	}
	// go says only that it reached the module's repository over none of
	// https and ssh; the error says what that may mean.
	if !strings.Contains(o.logs(), "127.0.0.1/privmod.git@v1.0.0: no secure protocol found for repository") {
		t.Errorf("the log does not say the module's repository was not reached:\n%s", o.logs())
	}
	if codes.Code(be.GetCode()) != codes.FailedPrecondition || !strings.Contains(be.GetMessage(), "ca-bundle") {
		t.Errorf("error %v %q, want FailedPrecondition naming the ca-bundle", codes.Code(be.GetCode()), be.GetMessage())
	}
	if n := strings.Count(o.logs(), "no secure protocol found"); n != 1 {
		t.Errorf("the download ran %d times: a retry cannot help it", n)
	}

	with := startServer(t, func(c *server.Config) {
		c.Credentials = &credentials.Config{Rules: p.serverRules(t), GoPrivate: "127.0.0.1", CABundle: p.CA}
		c.CacheNamespace = ns
	})
	res := requireSuccess(t, build(t, with, req))
	if out := runEntrypoint(t, pushedImage(t, res.Image)); !strings.Contains(out, "privateapp: hello from privmod") {
		t.Errorf("binary printed %q", out)
	}
}

// A private repository over ssh, fetched with the request's key through the
// session's ssh agent and the server's known hosts: it builds. With a wrong
// key for the host in the known hosts, the request is refused before
// anything is solved, naming the host and the key's fingerprint.
func TestPrivateSSH(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	_, repo := p.newPrivateRepo(t, plainFiles(t))
	req := &buildv1.CreateImageRequest{GitRepo: repo, ImageTag: tagFor(t, "ssh"),
		GitCredentials: &buildv1.GitCredentials{SshPrivateKey: p.SSHKey}}
	c := startServer(t, func(c *server.Config) { c.Credentials = &credentials.Config{KnownHosts: p.KnownHosts} })
	res := requireSuccess(t, build(t, c, req))
	img := pushedImage(t, res.Image)
	if out := runEntrypoint(t, img); !strings.Contains(out, "private-plain ok") {
		t.Errorf("binary printed %q", out)
	}
	if src := imageLabels(t, img)["org.opencontainers.image.source"]; strings.Contains(src, "@") || !strings.HasPrefix(src, "ssh://127.0.0.1:") {
		t.Errorf("source label %q", src)
	}
	if b := imageBytes(t, img); bytes.Contains(b, bytes.TrimSpace(p.SSHKey)[40:80]) {
		t.Error("the image holds the ssh key")
	}

	wrong := startServer(t, func(c *server.Config) { c.Credentials = &credentials.Config{KnownHosts: p.KnownHostsWrong} })
	requireRefused(t, wrong, build(t, wrong, req), codes.FailedPrecondition, "git_repo: ", "127.0.0.1:"+p.SSHPort, "SHA256:")

	nokey := cloneRequest(req)
	nokey.GitCredentials = nil
	requireRefusedAfter(t, c, build(t, c, nokey), 1, codes.InvalidArgument, "git_credentials.ssh_private_key: ")
}

// A push to a registry whose credentials only the request has succeeds;
// with a wrong password the build fails Unauthenticated.
func TestPrivateRegistryRequestCredentials(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	ts := startTestServer(t, nil)
	tag := p.Registry2 + "/team/" + strings.ToLower(t.Name()) + ":v1"
	req := &buildv1.CreateImageRequest{GitRepo: loadStack(t).GitBaseURL + "/sample.git", GitCommit: "main", ImageTag: tag,
		RegistryCredentials: []*buildv1.RegistryCredentials{{Registry: p.Registry2, Username: p.Registry2User, Password: p.Registry2Password}}}
	res := requireSuccess(t, build(t, ts.Client, req))

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CA)
	ref, err := name.ParseReference(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	img, err := remote.Image(ref, remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: p.Registry2User, Password: p.Registry2Password}))
	if err != nil {
		t.Fatalf("fetch %s: %v", res.Image, err)
	}
	if err := validateImage(img); err != nil {
		t.Fatal(err)
	}

	bad := cloneRequest(req)
	bad.RegistryCredentials[0].Password = "wrong-" + p.Registry2Password
	o := build(t, ts.Client, bad)
	be := o.buildErr()
	if be == nil || codes.Code(be.GetCode()) != codes.Unauthenticated {
		t.Fatalf("push with a wrong password: %v, stream %v", be, o.err)
	}
	if strings.Contains(be.GetMessage(), bad.RegistryCredentials[0].Password) || strings.Contains(ts.Log.String(), bad.RegistryCredentials[0].Password) {
		t.Error("the error or the server log shows the wrong password")
	}
}

// A request's secret_env reaches both build steps as environment, served as
// BuildKit secrets: a builder whose go prints the variable shows it masked,
// and the value appears in no output of the service. The stored request
// names the variable in credentials_given only.
func TestSecretEnv(t *testing.T) {
	t.Parallel()
	const value = "secret-env-VALUE-0123456789"
	ts := startTestServer(t, func(c *server.Config) {
		c.BuilderImage = splitOutputBuilder(t)
		c.AllowBuild = policy.Extra{Env: []string{"BUILDSVC_TEST_SECRET"}}
	})
	files := sampleFiles(t)
	// A go.mod of its own, so that the download step runs (BuildKit would
	// reuse it for the sample's module files: secrets are not in its key).
	files["go.mod"] += fmt.Sprintf("\n// %s %d\n", t.Name(), time.Now().UnixNano())
	repo := newRepo(t, files)
	o := build(t, ts.Client, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "v1"),
		SecretEnv: map[string]string{"BUILDSVC_TEST_SECRET": value}})
	res := requireSuccess(t, o)
	for _, step := range []string{"mod", "build"} {
		if !strings.Contains(o.logs(), "secret env in go "+step+": *****") {
			t.Errorf("go %s did not print the secret variable, masked; logs:\n%s", step, o.logs())
		}
	}
	info, err := ts.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: o.events[0].GetBuildId()})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.GetCredentialsGiven(), "secret_env BUILDSVC_TEST_SECRET") || info.GetRequest().GetSecretEnv() != nil {
		t.Errorf("record: credentials_given %q, secret_env %v", info.GetCredentialsGiven(), info.GetRequest().GetSecretEnv())
	}
	img := imageBytes(t, pushedImage(t, res.Image))
	ts.Stop()
	hist, err := os.ReadFile(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string][]byte{"events": eventsText(o.events), "image": img, "history file": hist, "server log": []byte(ts.Log.String())} {
		if bytes.Contains(text, []byte(value)) {
			t.Errorf("%s holds the secret value", where)
		}
	}
}

// A base image that does not exist is NotFound naming base_image, before
// the build is queued; one that exists is pinned to its digest in the
// record.
func TestMissingBaseImageBeforeQueueing(t *testing.T) {
	t.Parallel()
	st := loadStack(t)
	c := startServer(t, func(c *server.Config) {
		c.Tenants = &policy.Policies{Defaults: policy.Tenant{AllowLoopback: true, AllowAnyPort: true, BaseImages: []string{st.RegistryAddr + "/"}}}
	})
	req := &buildv1.CreateImageRequest{GitRepo: st.GitBaseURL + "/sample.git", GitCommit: "main", ImageTag: tagFor(t, "v1"),
		BaseImage: st.RegistryAddr + "/it/no-such-base:1"}
	requireRefused(t, c, build(t, c, req), codes.NotFound, "base_image: ", "does not exist")

	req.BaseImage = st.BaseImage
	o := build(t, c, req)
	requireSuccess(t, o)
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: o.events[0].GetBuildId()})
	if err != nil {
		t.Fatal(err)
	}
	if got := info.GetRequest().GetBaseImage(); !strings.HasPrefix(got, st.BaseImage+"@sha256:") {
		t.Errorf("the record's base image %q is not pinned", got)
	}
}
