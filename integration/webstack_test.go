//go:build integration

package integration

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// webClient is an HTTPS client of the stack's web listener that trusts
// the stack's CA and keeps cookies in jar; with mtls it presents the dev
// tenant's client certificate.
func (s stackSecurity) webClient(t *testing.T, mtls bool) (c *http.Client, jar *cookiejar.Jar) {
	t.Helper()
	jar, _ = cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: s.tlsConfig(t, mtls)}}, jar
}

// stackWeb is the stack's web listener (https://WEB_ADDR) and its sign-in
// link for the dev tenant (WEB_URL), from .stack/env.
func stackWeb(t *testing.T) (base, signIn string) {
	t.Helper()
	addr, signIn := os.Getenv("WEB_ADDR"), os.Getenv("WEB_URL")
	if addr == "" || signIn == "" {
		t.Fatal("WEB_ADDR and WEB_URL are not set: run the integration tests with `make test`, which starts the stack and sources .stack/env")
	}
	return "https://" + addr, signIn
}

// webCall makes a unary Connect call of method at base with c; browser
// adds what a browser's call carries (Origin, Sec-Fetch-Site and the
// session's CSRF token from jar).
func webCall(t *testing.T, c *http.Client, base, method, body string, browser bool, jar *cookiejar.Jar) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/"+method, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	if browser {
		req.Header.Set("Origin", base)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		u, _ := url.Parse(base)
		for _, ck := range jar.Cookies(u) {
			if ck.Name == "buildsvc_csrf" {
				req.Header.Set("X-Csrf-Token", ck.Value)
			}
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The stack's server serves its web face like production: HTTPS, the
// API's own authentication. A sign-in link with the dev token sets the
// session cookie and drops the token from the address; with the cookie
// (and the CSRF token) dev lists its builds and not another tenant's, and
// cannot read one; a wrong token signs nobody in; no answer and no page
// holds the token.
func TestWebOnTheStack(t *testing.T) {
	sec := loadStackSecurity(t)
	base, webURL := stackWeb(t)
	c, jar := sec.webClient(t, false)
	devToken := sec.token(t, sec.devToken)

	// Another tenant's build, through gRPC.
	other := buildv1.NewBuildClient(sec.dial(t, sec.otherToken, false))
	otherRepo := newRepo(t, sampleFiles(t))
	otherStart, err := other.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: otherRepo.URL, GitCommit: "main", ImageTag: tagFor(t, "other")}))
	if err != nil {
		t.Fatal(err)
	}

	// A wrong token signs nobody in.
	resp, err := c.Get(base + "/session?token=not-a-token-of-this-server-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d", resp.StatusCode)
	}
	u, _ := url.Parse(base)
	if len(jar.Cookies(u)) != 0 {
		t.Fatal("a wrong token got cookies")
	}

	// The stack's link signs dev in and ends on the page, without the
	// token in the address.
	if !strings.Contains(webURL, "token="+url.QueryEscape(devToken)) && !strings.Contains(webURL, "token="+devToken) {
		t.Fatalf("WEB_URL is not the dev tenant's sign-in link")
	}
	resp, err = c.Get(webURL + "&next=/builds")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/builds" || strings.Contains(resp.Request.URL.String(), "token") {
		t.Fatalf("after the sign-in link: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if !slices.ContainsFunc(jar.Cookies(u), func(ck *http.Cookie) bool { return ck.Name == "buildsvc_csrf" && ck.Value != "" }) {
		t.Fatal("no CSRF cookie after the sign-in")
	}
	call := func(method, body string) (int, string) {
		t.Helper()
		return webCall(t, c, base, method, body, true, jar)
	}
	code, list := call("build.v1.Build/ListBuilds", `{"pageSize":100}`)
	if code != 200 {
		t.Fatalf("ListBuilds with the session: %d %s", code, list)
	}
	if strings.Contains(list, otherStart.GetBuildId()) || strings.Contains(list, `"tenant":"other"`) {
		t.Error("dev's session lists the other tenant's build")
	}
	if code, body := call("build.v1.Build/GetBuild", `{"buildId":"`+otherStart.GetBuildId()+`"}`); code != http.StatusNotFound {
		t.Errorf("dev's session reads the other tenant's build: %d %s", code, body)
	}
	if code, _ := call("build.v1.AdminService/GetStatus", `{}`); code != http.StatusForbidden {
		t.Errorf("dev (no admin) reads the operators' status: %d", code)
	}

	for what, b := range map[string]string{"the page": string(page), "ListBuilds": list} {
		if strings.Contains(b, devToken) {
			t.Errorf("%s holds the dev token", what)
		}
	}
}

// The page's assets are in the server's binary: a server built from
// cmd/server and run in an empty directory serves web/assets' files.
func TestWebAssetsInTheBinary(t *testing.T) {
	st := loadStack(t)
	p := startServerProcess(t, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--web-listen", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--buildkit-addr", st.BuildKitAddr)
	rec := p.logged(t, "serving", 2*time.Minute)
	addr, _ := rec["web_addr"].(string)
	if addr == "" {
		t.Fatalf("the serving log has no web_addr: %v", rec)
	}
	for _, f := range []string{"app.js", "style.css", "index.html"} {
		want, err := os.ReadFile("../web/assets/" + f)
		if err != nil {
			t.Fatal(err)
		}
		path := "/assets/" + f
		if f == "index.html" {
			path = "/builds/some-id"
		}
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Errorf("%s: %d, %d bytes; want web/assets/%s's %d", path, resp.StatusCode, len(got), f, len(want))
		}
	}
}

// A browser with the dev tenant's client certificate signs in with it (a
// sign-in link with no token) on the stack's real server: the session
// then lists dev's builds and not another tenant's. Before the sign-in, a
// browser's call with the certificate alone is refused; a script's (no
// Sec-Fetch-* headers) is let in by the certificate as over gRPC.
func TestWebCertificateSignIn(t *testing.T) {
	sec := loadStackSecurity(t)
	base, _ := stackWeb(t)
	c, jar := sec.webClient(t, true)

	dev := buildv1.NewBuildClient(sec.dial(t, sec.devToken, false))
	other := buildv1.NewBuildClient(sec.dial(t, sec.otherToken, false))
	var ids [2]string
	for i, cl := range []buildv1.BuildClient{dev, other} {
		repo := newRepo(t, noModuleFiles(t.Name()+strconv.Itoa(i), ""))
		st, err := cl.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "web-cert")}))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = st.GetBuildId()
	}

	call := func(browser bool) (int, string) {
		t.Helper()
		return webCall(t, c, base, "build.v1.Build/ListBuilds", `{"pageSize":200}`, browser, jar)
	}
	if code, body := call(true); code != http.StatusUnauthorized {
		t.Fatalf("a browser's call with the certificate and no session: %d %.300s", code, body)
	}
	if code, body := call(false); code != 200 || !strings.Contains(body, ids[0]) {
		t.Fatalf("a script's call with the certificate: %d %.300s", code, body)
	}

	resp, err := c.Get(base + "/session?next=/builds/" + ids[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/builds/"+ids[0] {
		t.Fatalf("sign-in with the certificate: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	code, body := call(true)
	if code != 200 || !strings.Contains(body, ids[0]) {
		t.Fatalf("the certificate's session: %d %.300s", code, body)
	}
	if strings.Contains(body, ids[1]) {
		t.Error("dev's certificate session lists the other tenant's build")
	}
	for i, cl := range []buildv1.BuildClient{dev, other} {
		waitEnded(t, cl, ids[i], 5*time.Minute)
	}
}

// The stack's page in Chromium, over HTTPS with the stack's certificate
// (trusted by its key, nothing else): with no session the page says how
// to sign in; WEB_URL signs dev in and the address loses the token; dev
// sees its builds and is refused the operators' page; Sign out ends the
// session (the page asks to sign in again, the cookies are gone); the
// admin's link opens the operators' page with the stack's buildkitd
// healthy. No token (the callers', or the git host's a build was given)
// is ever in the page or its address.
func TestWebStackInChromium(t *testing.T) {
	sec := loadStackSecurity(t)
	base, webURL := stackWeb(t)
	certPEM, err := os.ReadFile(filepath.Join(filepath.Dir(sec.ca), "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatal("server.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	b := newBrowser(t, chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	devToken, adminToken := sec.token(t, sec.devToken), sec.token(t, sec.adminToken)

	// A build of a private repository with the git host's token in the
	// request: its page must not show the token anywhere.
	priv := loadPrivate(t)
	dev := buildv1.NewBuildClient(sec.dial(t, sec.devToken, false))
	repoURL, _ := priv.newPrivateRepo(t, plainFiles(t))
	started, err := dev.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repoURL, GitCommit: "main", ImageTag: tagFor(t, "chromium"),
		GitCredentials: &buildv1.GitCredentials{Password: priv.Token}, BuildFlags: []string{"-v"}}))
	if err != nil {
		t.Fatal(err)
	}
	id := started.GetBuildId()
	secrets := map[string]string{"dev": devToken, "admin": adminToken, "the git host's": priv.Token,
		"the git host's basic auth": base64.StdEncoding.EncodeToString([]byte("x-access-token:" + priv.Token))}
	noToken := func(when string) {
		t.Helper()
		html := value(t, b, 10*time.Second, "the page", chromedp.OuterHTML(chromedp.CSS("html")))
		loc := value(t, b, 10*time.Second, "the address", chromedp.Location())
		for name, tok := range secrets {
			if strings.Contains(html, tok) || strings.Contains(loc, tok) || strings.Contains(loc, url.QueryEscape(tok)) {
				t.Errorf("%s: the %s token is in the page or its address (%s)", when, name, loc)
			}
		}
	}

	b.do(t, time.Minute, "the page without a session", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`[role="alert"] a[href^="/session?next="]`)))
	b.audit(t, "the sign-in hint")

	b.do(t, time.Minute, "the dev sign-in link", chromedp.Navigate(webURL+"&next="+url.QueryEscape("/builds/"+id)),
		chromedp.WaitVisible(chromedp.CSS(`h1 ~ dl .state`)), chromedp.WaitVisible(chromedp.CSS("#sign-out")))
	if loc := value(t, b, 10*time.Second, "the address", chromedp.Location()); loc != base+"/builds/"+id {
		t.Errorf("after the sign-in link the page is at %s, want %s", loc, base+"/builds/"+id)
	}
	b.do(t, 5*time.Minute, "the private build ends on its page", chromedp.WaitVisible(chromedp.CSS(`h1 ~ dl [data-state="succeeded"]`)),
		until(`document.getElementById("logs").textContent.length > 0`))
	noToken("the private build's page")
	b.do(t, time.Minute, "dev's list", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-build=%q]`, id))))
	b.do(t, time.Minute, "dev on the operators' page", chromedp.Navigate(base+"/operators"),
		chromedp.WaitVisible(chromedp.CSS(`.error[role="alert"]`)))
	if msg := value(t, b, 10*time.Second, "the refusal", chromedp.Text(chromedp.CSS(`.error[role="alert"]`))); !strings.Contains(msg, "permission_denied") {
		t.Errorf("dev on the operators' page: %q", msg)
	}

	b.do(t, time.Minute, "sign out", chromedp.Click(chromedp.CSS("#sign-out")),
		chromedp.WaitVisible(chromedp.CSS(`[role="alert"] a[href^="/session?next="]`)))
	if ck := value(t, b, 10*time.Second, "the cookies", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(ck, "buildsvc_") {
		t.Errorf("after sign-out the page still has cookies %q", ck)
	}

	b.do(t, time.Minute, "the admin's sign-in link", chromedp.Navigate(base+"/session?token="+url.QueryEscape(adminToken)+"&next=/operators"),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-worker=%q] [data-health="healthy"]`, loadStack(t).BuildKitAddr))))
	noToken("signed in as admin")
	b.audit(t, "the stack's operators' page")
	waitEnded(t, dev, id, 5*time.Minute)
	// The refusals the test asked for are Chromium's "Failed to load
	// resource" with 401 (no session) and 403 (dev on the operators'
	// page); anything else is the page's.
	var errs []string
	for _, e := range b.consoleErrors() {
		if !strings.Contains(e, "Failed to load resource") || !strings.Contains(e, "status of 401") && !strings.Contains(e, "status of 403") {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
