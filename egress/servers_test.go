package egress

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/crypto/ssh"
)

// The real servers the credential tests run against, all on 127.0.0.1 in
// the test process: git's own http-backend (through net/http/cgi) and
// git-upload-pack (run by an x/crypto/ssh server), serving bare
// repositories made with git.

// repos is a directory of bare repositories: repo.git (main, with a commit,
// and an annotated tag v1 of it; HEAD → main) and empty.git.
type repos struct {
	root string
	want map[string]string // refsByName of repo.git
}

// gitEnv is an environment in which git reads no configuration of the
// machine or user and commits with fixed names and dates.
func gitEnv(home string) []string {
	return append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_AUTHOR_DATE=2024-01-01T00:00:00Z",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z")
}

func makeRepos(t *testing.T) repos {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	root, work := filepath.Join(dir, "srv"), filepath.Join(dir, "work")
	git := func(in string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = in, gitEnv(dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, d := range []string{root, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	git(root, "init", "-q", "--bare", "-b", "main", "repo.git")
	git(root, "init", "-q", "--bare", "-b", "main", "empty.git")
	git(work, "init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(work, "f"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "f")
	git(work, "commit", "-q", "-m", "one")
	git(work, "tag", "-a", "-m", "v1", "v1")
	git(work, "push", "-q", filepath.Join(root, "repo.git"), "main", "v1")
	bare := filepath.Join(root, "repo.git")
	commit := git(bare, "rev-parse", "main")
	return repos{root: root, want: map[string]string{
		"HEAD":            "-> refs/heads/main",
		"refs/heads/main": commit,
		"refs/tags/v1":    git(bare, "rev-parse", "v1"),
		"refs/tags/v1^{}": commit,
	}}
}

func (r repos) check(t *testing.T, what string, refs []*plumbing.Reference) {
	t.Helper()
	if got := refsByName(refs); fmt.Sprint(got) != fmt.Sprint(r.want) {
		t.Errorf("%s: refs = %v, want %v", what, got, r.want)
	}
}

// testCA is a certificate authority of the test, and a server certificate
// it signed for localhost, 127.0.0.1 and ::1.
type testCA struct {
	cert *x509.Certificate
	pem  []byte
	leaf tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, leafKey := key(), key()
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{
		cert: ca,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
	}
}

// gitHTTP is git http-backend serving a directory of repositories, behind
// basic auth (when user is set). Its redirects answer a repository's name
// with a redirect to another URL of a repository; it records the requests
// it gets.
type gitHTTP struct {
	*httptest.Server
	user, pass string
	mu         sync.Mutex
	redirects  map[string]string // "moved.git" → "https://host:port/repo.git"
	seen       []seenRequest
}

type seenRequest struct {
	path          string
	authorization string
}

// startGitHTTP starts git http-backend over TLS with ca's certificate, or
// over plain http if ca is nil.
func startGitHTTP(t *testing.T, root string, ca *testCA, user, pass string) *gitHTTP {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	backend := &cgi.Handler{Path: git, Args: []string{"http-backend"}, Dir: root, Stderr: io.Discard,
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}}
	g := &gitHTTP{user: user, pass: pass, redirects: map[string]string{}}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.seen = append(g.seen, seenRequest{r.URL.Path, r.Header.Get("Authorization")})
		name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		target, redirect := g.redirects[name]
		g.mu.Unlock()
		if redirect {
			http.Redirect(w, r, target+"/info/refs?"+r.URL.RawQuery, http.StatusFound)
			return
		}
		if u, p, ok := r.BasicAuth(); g.user != "" && (!ok || u != g.user || p != g.pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "log in at https://sso.internal/"+secret, http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	g.Config.ErrorLog = log.New(io.Discard, "", 0) // the TLS tests' failed handshakes
	if ca != nil {
		g.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf}}
		g.StartTLS()
	} else {
		g.Start()
	}
	t.Cleanup(g.Close)
	return g
}

func (g *gitHTTP) redirect(name, target string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.redirects[name] = target
}

func (g *gitHTTP) requests() []seenRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]seenRequest(nil), g.seen...)
}

func (g *gitHTTP) port() int { return g.Listener.Addr().(*net.TCPAddr).Port }

// sshServer is an ssh server that authenticates user "git" with one public
// key and runs git-upload-pack on a repository of root for the "exec"
// request of a session. It records the users and commands it sees.
type sshServer struct {
	addr     string // 127.0.0.1:port
	port     int
	hostKeys []ssh.Signer
	conns    atomic.Int32
	mu       sync.Mutex
	users    []string
	commands []string
}

func startSSH(t *testing.T, root string, client ssh.PublicKey, hostKeys ...ssh.Signer) *sshServer {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skip("no git")
	}
	uploadPack := filepath.Join(strings.TrimSpace(string(out)), "git-upload-pack")
	s := &sshServer{hostKeys: hostKeys}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		s.mu.Lock()
		s.users = append(s.users, c.User())
		s.mu.Unlock()
		if c.User() == "git" && bytes.Equal(key.Marshal(), client.Marshal()) {
			return &ssh.Permissions{}, nil
		}
		return nil, errors.New("not this key")
	}}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s.addr, s.port = l.Addr().String(), l.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go s.serve(c, cfg, root, uploadPack)
		}
	}()
	return s
}

func (s *sshServer) serve(c net.Conn, cfg *ssh.ServerConfig, root, uploadPack string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				var exec struct{ Command string }
				if req.Type != "exec" || ssh.Unmarshal(req.Payload, &exec) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				_ = req.Reply(true, nil)
				s.mu.Lock()
				s.commands = append(s.commands, exec.Command)
				s.mu.Unlock()
				status := runUploadPack(ch, exec.Command, root, uploadPack)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
				return
			}
		}()
	}
}

// runUploadPack runs "git-upload-pack 'PATH'" on root/PATH with the
// channel as its stdin and stdout, and returns its exit status.
func runUploadPack(ch ssh.Channel, command, root, uploadPack string) uint32 {
	path, ok := strings.CutPrefix(command, "git-upload-pack '")
	path, ok2 := strings.CutSuffix(path, "'")
	if !ok || !ok2 || strings.Contains(path, "'") {
		fmt.Fprintln(ch.Stderr(), "unexpected command")
		return 1
	}
	cmd := exec.Command(uploadPack, filepath.Join(root, path))
	cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 1
	}
	if err := cmd.Start(); err != nil {
		return 1
	}
	go func() { _, _ = io.Copy(stdin, ch) }() // Wait closes stdin
	var exit *exec.ExitError
	switch err := cmd.Wait(); {
	case errors.As(err, &exit):
		return uint32(exit.ExitCode())
	case err != nil:
		return 1
	}
	return 0
}

func (s *sshServer) seen() (users, commands []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.users...), append([]string(nil), s.commands...)
}

// sshKey is a private key for the tests: its signer and its PEM (OpenSSH
// format).
type sshKey struct {
	signer ssh.Signer
	pem    []byte
}

func newSSHKey(t *testing.T) sshKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return sshKey{signer, pem.EncodeToMemory(block)}
}

func newECDSAHostKey(t *testing.T, curve elliptic.Curve) ssh.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
