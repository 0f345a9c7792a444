//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/egress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// watchedListener is a listener of the test's own on 127.0.0.1 that
// records every connection it accepts and, if answer is set, writes
// answer to it.
type watchedListener struct {
	net.Listener
	accepted chan string // remote addresses
}

func watchListener(t testing.TB, answer string) *watchedListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	w := &watchedListener{Listener: l, accepted: make(chan string, 64)}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.accepted <- c.RemoteAddr().String()
			mu.Lock()
			conns = append(conns, c) // held open until the test ends
			mu.Unlock()
			if answer != "" {
				go func() {
					// git:// first sends its request line; answer after it.
					if _, err := bufio.NewReader(c).Peek(4); err == nil {
						io.WriteString(c, answer)
					}
				}()
			}
		}
	}()
	return w
}

func (w *watchedListener) port() int { return w.Addr().(*net.TCPAddr).Port }

// assertNoConnection proves nothing connected to the listener before now:
// the test connects itself and sees its own connection first (the kernel
// queues connections in order).
func (w *watchedListener) assertNoConnection(t testing.TB) {
	t.Helper()
	c, err := net.Dial("tcp", w.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-w.accepted:
		if got != c.LocalAddr().String() {
			t.Fatalf("the listener on %s accepted a connection from %s: the server connected to it", w.Addr(), got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener accepted nothing, not even the test's own connection")
	}
}

// wantStatus checks err's code and that its message has every one of
// parts.
func wantStatus(t testing.TB, what string, err error, code codes.Code, parts ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Errorf("%s: message %q does not say %q", what, st.Message(), p)
		}
	}
}

// A server without the loopback allowance refuses, before any connection,
// a repository on a name that resolves to 127.0.0.1 and one on the cloud
// metadata address: PermissionDenied naming git_repo and the rule, no build
// recorded, and the test's listener sees no connection. With loopback
// allowed but not the port, the port rule refuses it.
func TestHostPolicyRefusesBeforeConnecting(t *testing.T) {
	l := watchListener(t, "")
	ts := startTestServer(t, func(c *server.Config) {
		c.Resolver = server.RemoteResolver{}
		c.Tenants = nil
	})
	tag := tagFor(t, "x")
	// Loopback by name first: had the server dialled it, the test stops
	// here (Fatal) before it asks for the metadata address.
	_, err := ts.Client.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{
		GitRepo: fmt.Sprintf("git://localhost:%d/x.git", l.port()), GitCommit: "main", ImageTag: tag}))

	l.assertNoConnection(t)
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "git_repo: ") ||
		!strings.Contains(st.Message(), "(loopback)") || strings.Contains(st.Message(), "127.0.0.1") {
		t.Fatalf("git://localhost: %v, want PermissionDenied naming git_repo and the loopback rule, not the address", err)
	}
	t.Logf("refusal: %s", status.Convert(err).Message())

	_, err = ts.Client.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{
		GitRepo: "https://169.254.169.254/x.git", GitCommit: "main", ImageTag: tag}))

	wantStatus(t, "metadata address", err, codes.PermissionDenied, "git_repo: ", "(metadata)")

	list, err := ts.Client.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{})
	if err != nil || len(list.Builds) != 0 {
		t.Errorf("ListBuilds = %v, %v; want no build recorded", list, err)
	}

	// Loopback allowed, the port not: refused by the port rule.
	portOnly := startServer(t, func(c *server.Config) {
		c.Resolver = server.RemoteResolver{Allow: egress.Allowance{Loopback: true}}
		c.Tenants = nil
	})
	_, err = portOnly.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{
		GitRepo: fmt.Sprintf("git://127.0.0.1:%d/x.git", l.port()), GitCommit: "main", ImageTag: tag}))

	wantStatus(t, "loopback allowed, port not", err, codes.PermissionDenied, "git_repo: ", "(port)", fmt.Sprint(l.port()))
	l.assertNoConnection(t)
}

// A tenant whose policy allows loopback (and the git daemon's port) builds
// from the stack's git daemon on a server that allows neither; another
// tenant of the same server is refused, one with loopback but not the port
// too.
func TestTenantAllowLoopback(t *testing.T) {
	st := loadStack(t)
	u, err := url.Parse(st.GitBaseURL)
	if err != nil {
		t.Fatal(err)
	}
	tenantsYAML := fmt.Sprintf(`
tenants:
  trusted:
    allow_loopback: true
    allowed_ports: [%s]
  noport:
    allow_loopback: true
`, u.Port())
	_, c := startTenantServer(t, tenantsYAML, func(c *server.Config) { c.Resolver = server.RemoteResolver{} }, "trusted", "noport", "plain")
	repo := newRepo(t, sampleFiles(t))
	req := func(tenant string) *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, tenant)}
	}
	_, err = c["plain"].StartBuild(t.Context(), startRequest(req("plain")))
	wantStatus(t, "plain tenant", err, codes.PermissionDenied, "git_repo: ", "(loopback)", "allow_loopback")
	_, err = c["noport"].StartBuild(t.Context(), startRequest(req("noport")))
	wantStatus(t, "tenant with loopback, not the port", err, codes.PermissionDenied, "git_repo: ", "(port)", "allowed_ports")

	res := requireSuccess(t, build(t, c["trusted"], req("trusted")))
	if !strings.Contains(res.Image, "@sha256:") {
		t.Errorf("trusted tenant's image %q is not pinned by digest", res.Image)
	}
}

// A failed resolve says what kind of failure it was and nothing of what
// the remote answered (its body, its ERR line), with a code of its kind;
// the server's log keeps the cause. A resolve past the concurrency limit
// waits, then is refused with RESOURCE_EXHAUSTED.
func TestResolveErrorsDoNotEchoTheRemote(t *testing.T) {
	const secret = "INTERNAL-ONLY-8f3c1d"
	closed := watchListener(t, "")
	closedAddr := closed.Addr().String()
	closed.Close()
	gitERR := watchListener(t, fmt.Sprintf("%04xERR access denied: %s\n", len("ERR access denied: "+secret+"\n")+4, secret))
	garbage := watchListener(t, "HTTP/1.1 200 OK\r\nServer: "+secret+"\r\n\r\n")
	hang := watchListener(t, "")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/private.git/"):
			http.Error(w, "ask "+secret, http.StatusUnauthorized)
		case strings.HasPrefix(r.URL.Path, "/broken.git/"):
			http.Error(w, "panic: "+secret, http.StatusBadGateway)
		default:
			http.Error(w, "no such repository: "+secret, http.StatusNotFound)
		}
	}))
	t.Cleanup(web.Close)

	limits := egress.NewLimiter(1, 1)
	ts := startTestServer(t, func(c *server.Config) {
		c.AllowInsecureGit = true // plain http:// on loopback
		c.ResolveTimeout = time.Second
		c.Resolver = server.RemoteResolver{Allow: egress.Allowance{Loopback: true, AnyPort: true}, Limits: limits}
	})
	const prefix = "git_commit: could not list the refs of the repository "
	const notFound = "git_repo: could not list the refs of the repository (repository not found): the remote has no such repository, or does not show it with the credentials given"
	tests := []struct {
		name, repo string
		code       codes.Code
		msg        string
	}{
		{"closed port", "git://" + closedAddr + "/x.git", codes.Unavailable, prefix + "(connection refused)"},
		{"git ERR line", fmt.Sprintf("git://127.0.0.1:%d/x.git", gitERR.port()), codes.NotFound, notFound},
		{"not git", fmt.Sprintf("git://127.0.0.1:%d/x.git", garbage.port()), codes.Unknown, prefix + "(protocol error)"},
		{"http 404", web.URL + "/missing.git", codes.NotFound, notFound},
		{"http 401", web.URL + "/private.git", codes.Unauthenticated, "git_repo: " + strings.TrimPrefix(web.URL, "http://") +
			" wants credentials (authentication required); the server has none for this host and the request gave none (git_credentials)"},
		{"http 502", web.URL + "/broken.git", codes.Unknown, prefix + "(protocol error (HTTP status 502))"},
		{"hanging git server", fmt.Sprintf("git://127.0.0.1:%d/x.git", hang.port()), codes.DeadlineExceeded, prefix + "(timeout)"},
	}
	for _, tt := range tests {
		_, err := ts.Client.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: tt.repo, GitCommit: "main", ImageTag: tagFor(t, "x")}))
		if st := status.Convert(err); st.Code() != tt.code || st.Message() != tt.msg {
			t.Errorf("%s: %v, want %v %q", tt.name, err, tt.code, tt.msg)
		}
	}
	if !strings.Contains(ts.Log.String(), secret) {
		t.Error("the server's log does not keep the cause of a failed resolve (what the remote said)")
	}

	// One resolve at a time: while the test holds the one slot, a resolve
	// waits, and runs out of time waiting; once it is free, resolves run.
	release, err := limits.Acquire(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	repo := newRepo(t, sampleFiles(t))
	req := &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "no-such-branch", ImageTag: tagFor(t, "x")}
	_, err = ts.Client.StartBuild(t.Context(), startRequest(req))
	wantStatus(t, "resolve while the slot is taken", err, codes.ResourceExhausted, "git_commit: ", "too many refs at once (at most 1, 1 per tenant)")
	release()
	_, err = ts.Client.StartBuild(t.Context(), startRequest(req))
	wantStatus(t, "resolve once the slot is free", err, codes.NotFound, "git_commit: ", "no-such-branch")
}
