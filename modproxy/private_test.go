package modproxy

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	privUser  = "x-access-token"
	privToken = "privtok-5f1e0c9a7b3d44e2"
	privPath  = "example.com/privmod.git" // a name httptest's certificate has
)

// gitHost is a git smart-HTTP host over HTTPS that wants basic auth, with
// one repository: the module privPath, tagged v1.0.0.
type gitHost struct {
	addr     string
	caPEM    []byte
	requests atomic.Int64 // authenticated ones
}

func newGitHost(t *testing.T) *gitHost {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("no git: %v", err)
	}
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.test", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", work)
	for name, body := range map[string]string{
		"go.mod": "module " + privPath + "\n\ngo 1.21\n",
		"p.go":   "// Package privmod is private.\npackage privmod\n\nconst Hello = \"private hello\"\n",
	} {
		if err := os.WriteFile(filepath.Join(work, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("-C", work, "add", ".")
	git("-C", work, "commit", "-q", "-m", "privmod")
	git("-C", work, "tag", "v1.0.0")
	git("clone", "-q", "--bare", work, filepath.Join(dir, "srv", "privmod.git"))

	h := &gitHost{}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Join(dir, "srv"), "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != privUser || p != privToken {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		h.requests.Add(1)
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.addr = srv.Listener.Addr().String()
	h.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return h
}

// dial reaches the host for example.com:443 and refuses everything else,
// as a build's host policy would refuse what it does not allow.
func (h *gitHost) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if address != "example.com:443" {
		return nil, errors.New("refused by the test's policy")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, h.addr)
}

func (h *gitHost) private(token string) Private {
	return Private{
		Patterns: "example.com",
		Netrc:    []byte("machine example.com login " + privUser + " password " + token + "\n"),
		CABundle: h.caPEM,
		Dial:     h.dial,
	}
}

// privateMain is a main module requiring the private module.
func privateMain(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.test/main\n\ngo 1.21\n\nrequire "+privPath+" v1.0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A build allowed to fetch its GOPRIVATE modules gets them through the
// proxy, fetched from the host with its credentials over the build's
// host policy; a later build of the scope gets them from the cache,
// without credentials of its own and without the host; a build of another
// scope does not; a wrong token or a refused host fails the download with
// a not-found answer that says so. The token is nowhere on the proxy's
// disk after.
func TestPrivateModules(t *testing.T) {
	if !(&Proxy{opts: defaultOptions()}).FetchesPrivate() {
		t.Skip("no go or git on PATH")
	}
	host := newGitHost(t)
	up := newUpstream(t) // no public modules
	s := serve(t, WithUpstream(up.URL))
	netrc := func(scope, build string) []byte {
		n, err := s.Netrc(s.host(), scope, build)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The build's go command: its GOPRIVATE modules through the proxy
	// (GONOPROXY=none), not checked against the checksum database.
	env := func(scope, build string) []string {
		return s.goEnv(t, scope, netrc(scope, build), "GOPRIVATE=example.com", "GONOPROXY=none")
	}
	dir := privateMain(t)

	if err := s.AllowPrivate("b1", host.private(privToken)); err != nil {
		t.Fatal(err)
	}
	got, out, err := goModDownload(t, dir, env("tenant-a", "b1"))
	if err != nil || len(got) != 1 || got[0].Zip == "" {
		t.Fatalf("download through the proxy: %v %+v\n%s", err, got, out)
	}
	if st := s.BuildStats("b1"); st.Misses == 0 || host.requests.Load() == 0 {
		t.Errorf("first build: stats %+v, %d requests to the host: want the module fetched from it", st, host.requests.Load())
	}
	s.Forget("b1")

	before := host.requests.Load()
	got, out, err = goModDownload(t, dir, env("tenant-a", "b2"))
	if err != nil || len(got) != 1 {
		t.Fatalf("second build of the scope: %v\n%s", err, out)
	}
	if st := s.BuildStats("b2"); st.Misses != 0 || st.Hits == 0 || host.requests.Load() != before {
		t.Errorf("second build: stats %+v, %d more requests to the host: want everything from the cache", st, host.requests.Load()-before)
	}

	for _, tc := range []struct {
		name, build string
		priv        *Private
		want        string
	}{
		{"another scope, no credentials", "b3", nil, "not found"},
		{"a wrong token", "b4", func() *Private { p := host.private("wrong-" + privToken); return &p }(), "fetching a GOPRIVATE module with the build's credentials"},
		{"a host the policy refuses", "b5", func() *Private {
			p := host.private(privToken)
			p.Dial = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("refused") }
			return &p
		}(), "fetching a GOPRIVATE module with the build's credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.priv != nil {
				if err := s.AllowPrivate(tc.build, *tc.priv); err != nil {
					t.Fatal(err)
				}
			}
			_, out, err := goModDownload(t, dir, env("tenant-"+tc.build, tc.build))
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("download = %v, want a failure saying %q:\n%s", err, tc.want, out)
			}
			if strings.Contains(out, privToken) {
				t.Errorf("the go command's output has the token:\n%s", out)
			}
		})
	}

	// No temporary directory is left, and the token is in no file.
	_ = filepath.WalkDir(s.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), "private-") {
			t.Errorf("left behind: %s", p)
		}
		if !d.IsDir() {
			if dt, err := os.ReadFile(p); err == nil && strings.Contains(string(dt), privToken) {
				t.Errorf("%s holds the token", p)
			}
		}
		return nil
	})
}

func TestAllowPrivateRefusesBadPatterns(t *testing.T) {
	s := serve(t)
	for _, pat := range []string{"", " , ", "a.example b.example"} {
		if err := s.AllowPrivate("b", Private{Patterns: pat}); err == nil {
			t.Errorf("AllowPrivate(%q) accepted", pat)
		}
	}
}
