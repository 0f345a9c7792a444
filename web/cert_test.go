package web

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testCA issues client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) client(t *testing.T, cn string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A caller with a client certificate signs in with it (a link with no
// token); the session then holds only with that certificate. Without a
// session, a browser's calls with the certificate are refused (any page
// could make them), a script's go through.
func TestCertificateSession(t *testing.T) {
	h, fb := newHandler(t)
	ca := newTestCA(t)
	ts := httptest.NewUnstartedServer(h)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	ts.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	ts.StartTLS()
	t.Cleanup(ts.Close)

	client := func(certs ...tls.Certificate) *http.Client {
		tr := ts.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		jar, _ := cookiejar.New(nil)
		return &http.Client{Transport: tr, Jar: jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	mine, second, other := ca.client(t, certCaller, 2), ca.client(t, secondCaller, 3), ca.client(t, "someone else", 4)
	api := ts.URL + "/api/build.v1.Build/ListBuilds"
	browser := map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": ts.URL}

	c := client(mine)
	if code, body := post(t, c, api, `{}`, browser); code != http.StatusUnauthorized || !strings.Contains(body, "sign in first") {
		t.Fatalf("a browser's call with the certificate and no session: %d %s", code, body)
	}
	if code, body := post(t, c, api, `{}`, nil); code != 200 || !strings.Contains(body, "b1") {
		t.Fatalf("a script's call with the certificate: %d %s", code, body)
	}

	if resp, err := client().Get(ts.URL + "/session"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
		t.Fatalf("no token and no certificate: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	if resp, err := client(other).Get(ts.URL + "/session"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("a certificate of no caller: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}

	resp, err := c.Get(ts.URL + "/session?next=/operators")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/operators" {
		t.Fatalf("sign-in with the certificate: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	sess, csrf := sessionCookies(resp)
	if sess == nil || csrf == nil || !sess.HttpOnly {
		t.Fatalf("cookies %v", resp.Cookies())
	}
	withCSRF := map[string]string{csrfHeader: csrf.Value, "Sec-Fetch-Site": "same-origin", "Origin": ts.URL}
	if code, _ := post(t, c, api, `{}`, browser); code != http.StatusForbidden {
		t.Fatalf("the session without its CSRF token: %d", code)
	}
	if code, body := post(t, c, api, `{}`, withCSRF); code != 200 || !strings.Contains(body, "b1") {
		t.Fatalf("the session with its CSRF token: %d %s", code, body)
	}
	fb.mu.Lock()
	last := fb.auths[len(fb.auths)-1]
	fb.mu.Unlock()
	if last != "cert:"+certCaller {
		t.Fatalf("the call reached the server as %q, want by the certificate", last)
	}

	// The cookies taken to a browser with another certificate, or none.
	for name, c2 := range map[string]*http.Client{"another caller's certificate": client(second), "no certificate": client()} {
		req, _ := http.NewRequest(http.MethodPost, api, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Connect-Protocol-Version", "1")
		for k, v := range withCSRF {
			req.Header.Set(k, v)
		}
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: sess.Value})
		resp, err := c2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the session with %s: %d, want 401", name, resp.StatusCode)
		}
	}
}
