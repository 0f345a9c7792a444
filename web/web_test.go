package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

const goodToken = "good-token-0123456789"

// certCaller and secondCaller are the common names of the client
// certificates the fake server lets in.
const (
	certCaller   = "cert-caller"
	secondCaller = "second-caller"
)

// fakeBuild answers ListBuilds and WatchBuild; the interceptor in front
// of it lets in only goodToken.
type fakeBuild struct {
	buildv1.UnimplementedBuildServer
	mu    sync.Mutex
	auths []string
}

func (f *fakeBuild) ListBuilds(ctx context.Context, _ *buildv1.ListBuildsRequest) (*buildv1.ListBuildsResponse, error) {
	return &buildv1.ListBuildsResponse{Builds: []*buildv1.BuildInfo{{BuildId: "b1", State: buildv1.BuildState_BUILD_STATE_BUILDING}}}, nil
}

func (f *fakeBuild) WatchBuild(req *buildv1.WatchBuildRequest, s buildv1.Build_WatchBuildServer) error {
	for i := range 3 {
		if err := s.Send(&buildv1.BuildEvent{BuildId: req.GetBuildId(), Seq: uint64(i + 1)}); err != nil {
			return err
		}
	}
	return status.Error(codes.NotFound, "no more")
}

func (f *fakeBuild) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	a := strings.Join(md.Get("authorization"), ",")
	f.mu.Lock()
	f.auths = append(f.auths, a)
	f.mu.Unlock()
	if a == "Bearer "+goodToken {
		return nil
	}
	if p, ok := peer.FromContext(ctx); ok && a == "" {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 &&
			(ti.State.VerifiedChains[0][0].Subject.CommonName == certCaller || ti.State.VerifiedChains[0][0].Subject.CommonName == secondCaller) {
			f.mu.Lock()
			f.auths[len(f.auths)-1] = "cert:" + ti.State.VerifiedChains[0][0].Subject.CommonName
			f.mu.Unlock()
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "no valid token or certificate")
}

func newTestServer(t *testing.T) (*httptest.Server, *fakeBuild) {
	t.Helper()
	h, fb := newHandler(t)
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts, fb
}

func newHandler(t *testing.T) (http.Handler, *fakeBuild) {
	t.Helper()
	fb := &fakeBuild{}
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := fb.authorize(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := fb.authorize(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	buildv1.RegisterBuildServer(gs, fb)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	h, err := New(Config{GRPC: gs, SessionKey: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return h, fb
}

// sessionCookies are the session and CSRF cookies resp sets, nil if not.
func sessionCookies(resp *http.Response) (sess, csrf *http.Cookie) {
	for _, ck := range resp.Cookies() {
		switch ck.Name {
		case sessionCookie:
			sess = ck
		case csrfCookie:
			csrf = ck
		}
	}
	return sess, csrf
}

func post(t *testing.T, c *http.Client, u, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The API is the gRPC server's, over HTTP/JSON, with its authentication:
// a bearer token in the Authorization header goes through.
func TestAPIWithToken(t *testing.T) {
	ts, _ := newTestServer(t)
	code, body := post(t, ts.Client(), ts.URL+"/api/build.v1.Build/ListBuilds", `{"pageSize":1}`, map[string]string{"Authorization": "Bearer " + goodToken})
	if code != 200 || !strings.Contains(body, `"buildId":"b1"`) || !strings.Contains(body, `"BUILD_STATE_BUILDING"`) {
		t.Fatalf("%d %s", code, body)
	}
	code, body = post(t, ts.Client(), ts.URL+"/api/build.v1.Build/ListBuilds", `{}`, nil)
	if code != http.StatusUnauthorized || !strings.Contains(body, `"unauthenticated"`) {
		t.Fatalf("without a token: %d %s", code, body)
	}
}

// A sign-in link's token becomes an HttpOnly, SameSite=Strict session
// cookie and the browser goes on without the token; calls with the cookie
// need the CSRF token and the page's origin.
func TestSession(t *testing.T) {
	ts, fb := newTestServer(t)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := c.Get(ts.URL + "/session?token=wrong")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("a wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}

	for _, next := range []string{"//evil.example/x", "https://evil.example/", `/\evil.example`} {
		resp, err = c.Get(ts.URL + "/session?token=" + goodToken + "&next=" + url.QueryEscape(next))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "/" {
			t.Errorf("next=%q sent the browser to %q, want /", next, loc)
		}
	}
	resp, err = c.Get(ts.URL + "/session?token=" + goodToken + "&next=" + url.QueryEscape("/builds/b1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/builds/b1" {
		t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	sess, csrf := sessionCookies(resp)
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || csrf == nil || csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookies: session %+v, csrf %+v", sess, csrf)
	}
	if strings.Contains(sess.Value, goodToken) || strings.Contains(csrf.Value, goodToken) {
		t.Fatal("a cookie holds the token in the clear")
	}

	api := ts.URL + "/api/build.v1.Build/ListBuilds"
	if code, body := post(t, c, api, `{}`, nil); code != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Fatalf("no CSRF token: %d %s", code, body)
	}
	if code, _ := post(t, c, api, `{}`, map[string]string{csrfHeader: "forged"}); code != http.StatusForbidden {
		t.Fatalf("a wrong CSRF token: %d", code)
	}
	if code, _ := post(t, c, api, `{}`, map[string]string{csrfHeader: csrf.Value, "Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Fatalf("another origin: %d", code)
	}
	if code, _ := post(t, c, api, `{}`, map[string]string{csrfHeader: csrf.Value, "Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Fatalf("a cross-site fetch: %d", code)
	}
	u, _ := url.Parse(ts.URL)
	code, body := post(t, c, api, `{}`, map[string]string{csrfHeader: csrf.Value, "Origin": ts.URL, "Sec-Fetch-Site": "same-origin"})
	if code != 200 || !strings.Contains(body, "b1") {
		t.Fatalf("with the cookie and CSRF token: %d %s", code, body)
	}
	fb.mu.Lock()
	last := fb.auths[len(fb.auths)-1]
	fb.mu.Unlock()
	if last != "Bearer "+goodToken {
		t.Fatalf("the call reached the server with %q", last)
	}

	// A cookie sealed with another key, or tampered with, is refused.
	jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sess.Value[:len(sess.Value)-2] + "AA"}})
	if code, _ := post(t, c, api, `{}`, map[string]string{csrfHeader: csrf.Value}); code != http.StatusUnauthorized {
		t.Fatalf("a tampered session: %d", code)
	}

	// Signing out clears both cookies.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/session/end", nil)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(jar.Cookies(u)) != 0 {
		t.Fatalf("after sign-out: %v", jar.Cookies(u))
	}
}

func TestSessionExpires(t *testing.T) {
	s, err := newSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.seal(session{Token: "t", ID: "i", Expires: time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.open(v, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.open(v, time.Now().Add(2*time.Minute)); err == nil {
		t.Fatal("an expired session opened")
	}
	other, _ := newSealer(bytes.Repeat([]byte{1}, 32))
	if _, err := other.open(v, time.Now()); err == nil {
		t.Fatal("a session opened with another key")
	}
}

// A server stream in Connect's enveloped JSON: each message, then the end
// with the call's error.
func TestStream(t *testing.T) {
	ts, _ := newTestServer(t)
	payload, _ := json.Marshal(map[string]string{"buildId": "b1"})
	var frame bytes.Buffer
	frame.WriteByte(0)
	_ = binary.Write(&frame, binary.BigEndian, uint32(len(payload)))
	frame.Write(payload)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/build.v1.Build/WatchBuild", &frame)
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Authorization", "Bearer "+goodToken)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var seqs []string
	var end string
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			t.Fatalf("the stream ended without its end message: %v", err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			t.Fatal(err)
		}
		if hdr[0]&2 != 0 {
			end = string(msg)
			break
		}
		var e struct{ Seq string }
		_ = json.Unmarshal(msg, &e)
		seqs = append(seqs, e.Seq)
	}
	if strings.Join(seqs, ",") != "1,2,3" || !strings.Contains(end, `"not_found"`) || !strings.Contains(end, "no more") {
		t.Fatalf("messages %v, end %s", seqs, end)
	}
}

// The page is served for its routes, from the binary; other paths are
// not found; every answer carries the security headers.
func TestPages(t *testing.T) {
	ts, _ := newTestServer(t)
	for _, tt := range []struct {
		path, want, ctype string
		code              int
	}{
		{"/", `<script type="module" src="/assets/app.js">`, "text/html", 200},
		{"/builds/20261202-000000.000000-0123456789", `<main id="main"`, "text/html", 200},
		{"/operators", `<main id="main"`, "text/html", 200},
		{"/assets/app.js", "function buildPage(id)", "javascript", 200},
		{"/assets/style.css", ".timeline", "text/css", 200},
		{"/etc/passwd", "", "", 404},
		{"/assets/../web.go", "", "", 404},
	} {
		resp, err := ts.Client().Get(ts.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code || !strings.Contains(string(b), tt.want) || !strings.Contains(resp.Header.Get("Content-Type"), tt.ctype) {
			t.Errorf("%s: %d %q (%d bytes), want %d %q containing %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b), tt.code, tt.ctype, tt.want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: security headers %v", tt.path, resp.Header)
		}
	}
}
