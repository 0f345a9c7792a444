package web

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The cookies and the header of a session.
const (
	// sessionCookie holds the sealed session (the caller's token): sent
	// only to this server, never readable by scripts.
	sessionCookie = "buildsvc_session"
	// csrfCookie holds the session's CSRF token, which the page reads and
	// sends back in csrfHeader with every call.
	csrfCookie = "buildsvc_csrf"
	csrfHeader = "X-Csrf-Token"
)

// session is what a session cookie seals: the caller's token, or, for a
// caller signed in with a client certificate, the certificate's
// fingerprint (the certificate itself still authenticates every call).
type session struct {
	Token   string `json:"t,omitempty"`
	Cert    string `json:"c,omitempty"`
	ID      string `json:"i"`
	Expires int64  `json:"e"`
}

// sealer seals sessions with AES-GCM and derives their CSRF tokens.
type sealer struct {
	aead    cipher.AEAD
	csrfKey []byte
}

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	k := sha256.Sum256(append([]byte("buildsvc csrf\x00"), key...))
	return &sealer{aead: aead, csrfKey: k[:]}, nil
}

func (s *sealer) seal(v session) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(sessionCookie))), nil
}

var errBadSession = errors.New("the session is not valid (expired, or sealed with another key): sign in again")

func (s *sealer) open(v string, now time.Time) (session, error) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < s.aead.NonceSize() {
		return session{}, errBadSession
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(sessionCookie))
	if err != nil {
		return session{}, errBadSession
	}
	var out session
	if err := json.Unmarshal(plain, &out); err != nil || (out.Token == "") == (out.Cert == "") || now.Unix() >= out.Expires {
		return session{}, errBadSession
	}
	return out, nil
}

// csrf is the CSRF token of session id.
func (s *sealer) csrf(id string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// serveAPI serves the transcoded API. A call with an Authorization header
// (a script's) goes as it is. One with the session cookie must come from
// the page's origin with the session's CSRF token, and then carries the
// session's token, or must come with the session's client certificate. A
// browser's call with a client certificate and no session is refused:
// browsers send certificates to any page's calls, cookies they keep for
// the page's own.
func (h *handler) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		h.api.ServeHTTP(w, r)
		return
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		if clientCert(r) != nil && fromBrowser(r) {
			connectError(w, http.StatusUnauthorized, "unauthenticated",
				"sign in first (/session): a browser's calls with a client certificate need a session")
			return
		}
		h.api.ServeHTTP(w, r)
		return
	}
	s, err := h.sessions.open(c.Value, time.Now())
	if err != nil {
		connectError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
		return
	}
	if !sameOrigin(r) {
		connectError(w, http.StatusForbidden, "permission_denied", "the call does not come from the page's origin")
		return
	}
	if got := r.Header.Get(csrfHeader); subtle.ConstantTimeCompare([]byte(got), []byte(h.sessions.csrf(s.ID))) != 1 {
		connectError(w, http.StatusForbidden, "permission_denied", "the call lacks the session's CSRF token ("+csrfHeader+")")
		return
	}
	if s.Cert != "" {
		if cert := clientCert(r); cert == nil || fingerprint(cert) != s.Cert {
			connectError(w, http.StatusUnauthorized, "unauthenticated",
				"the session was signed in with a client certificate the browser did not send: sign in again")
			return
		}
		h.api.ServeHTTP(w, r)
		return
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+s.Token)
	h.api.ServeHTTP(w, r)
}

// clientCert is the verified client certificate of r's connection, or nil.
func clientCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// fingerprint names a certificate in a session.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// fromBrowser reports whether r looks like a browser's call: browsers
// send Sec-Fetch-* (and Origin on cross-origin calls); scripts need not.
func fromBrowser(r *http.Request) bool {
	return r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Sec-Fetch-Mode") != ""
}

// sameOrigin reports whether a call comes from a page of this server:
// its Origin, which browsers send with every cross-origin POST, names the
// host the call was made to, and Sec-Fetch-Site, when sent, says
// same-origin.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// connectError answers as a Connect unary call fails.
func connectError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
}

// signIn exchanges the token of a sign-in link, or the browser's client
// certificate when the link has none, for a session: it checks the caller
// with a call of the API (as any caller's), sets the cookies and sends the
// browser on to next (a path of this server) without the token.
func (h *handler) signIn(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token := r.URL.Query().Get("token")
	next := r.URL.Query().Get("next")
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		next = "/"
	}
	s := session{Token: token}
	if token == "" {
		cert := clientCert(r)
		if cert == nil {
			http.Error(w, "the sign-in link has no token, and the browser sent no client certificate the server trusts", http.StatusBadRequest)
			return
		}
		s.Cert = fingerprint(cert)
	}
	if err := h.checkCaller(r, token); err != nil {
		h.cfg.Logger.Info("web sign-in refused", "remote", r.RemoteAddr, "certificate", s.Cert != "", "err", err)
		http.Error(w, "the sign-in was not accepted: "+err.Error(), http.StatusUnauthorized)
		return
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	expires := time.Now().Add(h.cfg.SessionTTL)
	s.ID, s.Expires = base64.RawURLEncoding.EncodeToString(id), expires.Unix()
	sealed, err := h.sessions.seal(s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sealed, Path: "/", Expires: expires,
		HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: h.sessions.csrf(s.ID), Path: "/", Expires: expires,
		Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	h.cfg.Logger.Info("web sign-in", "remote", r.RemoteAddr, "certificate", s.Cert != "", "expires", expires.Format(time.RFC3339))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// checkCaller asks the API for one build, with token if it is not empty,
// over r's connection (its client certificate): the server's own
// authentication says whether that signs a caller in.
func (h *handler) checkCaller(r *http.Request, token string) error {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/build.v1.Build/ListBuilds", strings.NewReader(`{"pageSize":1}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.TLS, req.RemoteAddr, req.Host = r.TLS, r.RemoteAddr, r.Host
	var a answer
	h.api.ServeHTTP(&a, req)
	if a.code == http.StatusOK {
		return nil
	}
	var e struct{ Message string }
	_ = json.Unmarshal(a.body.Bytes(), &e)
	return fmt.Errorf("%d %s", a.code, e.Message)
}

// answer is the http.ResponseWriter (and Flusher) of checkCaller's call:
// it keeps the status and the first 64 KiB of the body.
type answer struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (a *answer) Header() http.Header {
	if a.header == nil {
		a.header = http.Header{}
	}
	return a.header
}

func (a *answer) WriteHeader(code int) {
	if a.code == 0 {
		a.code = code
	}
}

func (a *answer) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	if n := 64<<10 - a.body.Len(); n > 0 {
		a.body.Write(b[:min(n, len(b))])
	}
	return len(b), nil
}

// Flush is there because the gRPC server's HTTP handler needs a Flusher.
func (a *answer) Flush() {}

// signOut ends the session (its cookies); the page then shows the sign-in
// hint.
func (h *handler) signOut(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "not from the page's origin", http.StatusForbidden)
		return
	}
	for _, name := range []string{sessionCookie, csrfCookie} {
		http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: name == sessionCookie,
			Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	}
	w.WriteHeader(http.StatusNoContent)
}
