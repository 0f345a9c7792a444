package modproxy

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/zip"
)

// testKey is a fixed HMAC key, so credentials in a test are reproducible.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// modFiles are the files of one module version as an upstream proxy serves them.
type modFiles struct {
	path, version string
	mod, zip      []byte
}

// makeModule builds a module version whose go.mod declares path and whose package holds
// the given source text.
func makeModule(t *testing.T, path, version, source string) modFiles {
	t.Helper()
	src := t.TempDir()
	mod := fmt.Sprintf("module %s\n\ngo 1.21\n", path)
	pkg := path[strings.LastIndex(path, "/")+1:]
	for name, data := range map[string]string{
		"go.mod":    mod,
		pkg + ".go": fmt.Sprintf("package %s\n\n// Value is %q.\nconst Value = %q\n", pkg, source, source),
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := zip.CreateFromDir(&buf, module.Version{Path: path, Version: version}, src); err != nil {
		t.Fatalf("zip %s@%s: %v", path, version, err)
	}
	return modFiles{path: path, version: version, mod: []byte(mod), zip: buf.Bytes()}
}

// goSum returns the go.sum lines of m (what a checksum database records for it).
func (m modFiles) goSum(t *testing.T) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(f, m.zip, 0o644); err != nil {
		t.Fatal(err)
	}
	zh, err := dirhash.HashZip(f, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(m.mod)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(nil, "%s %s %s\n%s %s/go.mod %s\n", m.path, m.version, zh, m.path, m.version, mh)
}

// upstream is a local module proxy (GOPROXY file layout behind http.FileServer) that
// counts the requests it gets.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newUpstream(t *testing.T, mods ...modFiles) *upstream {
	t.Helper()
	root := t.TempDir()
	lists := map[string][]string{}
	for _, m := range mods {
		ep, err := module.EscapePath(m.path)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, filepath.FromSlash(ep), "@v")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		info := fmt.Sprintf(`{"Version":%q,"Time":"2024-01-02T03:04:05Z"}`, m.version)
		for ext, data := range map[string][]byte{".info": []byte(info), ".mod": m.mod, ".zip": m.zip} {
			if err := os.WriteFile(filepath.Join(dir, m.version+ext), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		lists[dir] = append(lists[dir], m.version)
	}
	for dir, versions := range lists {
		if err := os.WriteFile(filepath.Join(dir, "list"), []byte(strings.Join(versions, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := &upstream{}
	files := http.FileServer(http.Dir(root))
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths = append(u.paths, r.URL.Path)
		u.mu.Unlock()
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// requests returns how many requests the upstream got, and how many of them end in suffix.
func (u *upstream) requests(suffix string) (all, matching int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, p := range u.paths {
		if strings.HasSuffix(p, suffix) {
			matching++
		}
	}
	return len(u.paths), matching
}

// served is a Proxy behind a TLS test server (the go command sends netrc credentials
// only over https).
type served struct {
	*Proxy
	srv    *httptest.Server
	caFile string
	reg    *prometheus.Registry
}

func serve(t *testing.T, opts ...Option) *served {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(t.TempDir(), append([]Option{WithKey(testKey), WithRegisterer(reg)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewUnstartedServer(p.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the go command's dropped TLS connections
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		p.Close()
	})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return &served{Proxy: p, srv: srv, caFile: ca, reg: reg}
}

// host is the host:port a netrc machine line must name.
func (s *served) host() string {
	u, _ := url.Parse(s.srv.URL)
	return u.Host
}

// get fetches path from the proxy with basic auth user:pass (none if user is empty).
func (s *served) get(t *testing.T, path, user, pass string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// goEnv is the environment of a go command using the proxy's scope, with a fresh HOME
// holding netrc (if not nil), a fresh module cache and nothing from the test's own
// environment.
func (s *served) goEnv(t *testing.T, scope string, netrc []byte, extra ...string) []string {
	t.Helper()
	home := t.TempDir()
	if netrc != nil {
		if err := os.WriteFile(filepath.Join(home, ".netrc"), netrc, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := t.TempDir()
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"GOPROXY=" + s.srv.URL + "/" + scope,
		"GOMODCACHE=" + filepath.Join(tmp, "modcache"),
		"GOPATH=" + filepath.Join(tmp, "gopath"),
		"GOCACHE=" + filepath.Join(tmp, "gocache"),
		"GOFLAGS=-mod=mod -modcacherw",
		"GOENV=off",
		"GOTOOLCHAIN=local",
		"GOTELEMETRY=off",
		"SSL_CERT_FILE=" + s.caFile,
	}, extra...)
}

// mainModule writes a main module requiring mods and returns its directory.
func mainModule(t *testing.T, mods ...modFiles) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("module example.test/main\n\ngo 1.21\n\nrequire (\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "\t%s %s\n", m.path, m.version)
	}
	b.WriteString(")\n")
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// downloaded is one record of `go mod download -json`.
type downloaded struct {
	Path, Version, Zip, Error string
}

// goModDownload runs `go mod download -json` in dir and returns what it downloaded.
func goModDownload(t *testing.T, dir string, env []string) ([]downloaded, string, error) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json")
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out []downloaded
	dec := json.NewDecoder(&stdout)
	for {
		var d downloaded
		if err := dec.Decode(&d); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("decode go mod download output: %v\n%s", err, stdout.String())
			}
			break
		}
		out = append(out, d)
	}
	return out, stdout.String() + stderr.String(), runErr
}
