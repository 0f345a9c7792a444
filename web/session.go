package web

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// session is what a session cookie seals.
type session struct {
	Token   string `json:"t"`
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
	if err := json.Unmarshal(plain, &out); err != nil || out.Token == "" || now.Unix() >= out.Expires {
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
// goes as it is; one with the session cookie must come from the page's
// origin with the session's CSRF token, and then carries the session's
// token.
func (h *handler) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		if c, err := r.Cookie(sessionCookie); err == nil {
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
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+s.Token)
		}
	}
	h.api.ServeHTTP(w, r)
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

// signIn exchanges the token of a sign-in link for a session: it checks
// the token with a call of the API (as any caller's), sets the cookies and
// sends the browser on to next (a path of this server) without the token.
func (h *handler) signIn(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	next := r.URL.Query().Get("next")
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		next = "/"
	}
	if token == "" {
		http.Error(w, "the sign-in link has no token", http.StatusBadRequest)
		return
	}
	if err := h.checkToken(r, token); err != nil {
		h.cfg.Logger.Info("web sign-in refused", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "the sign-in link's token was not accepted: "+err.Error(), http.StatusUnauthorized)
		return
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	expires := time.Now().Add(h.cfg.SessionTTL)
	s := session{Token: token, ID: base64.RawURLEncoding.EncodeToString(id), Expires: expires.Unix()}
	sealed, err := h.sessions.seal(s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sealed, Path: "/", Expires: expires,
		HttpOnly: true, Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: h.sessions.csrf(s.ID), Path: "/", Expires: expires,
		Secure: h.cfg.Secure, SameSite: http.SameSiteStrictMode})
	h.cfg.Logger.Info("web sign-in", "remote", r.RemoteAddr, "expires", expires.Format(time.RFC3339))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// checkToken asks the API, with token, for one build: the server's own
// authentication says whether the token signs a caller in.
func (h *handler) checkToken(r *http.Request, token string) error {
	req := httptest.NewRequestWithContext(r.Context(), http.MethodPost, "/build.v1.Build/ListBuilds", strings.NewReader(`{"pageSize":1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Authorization", "Bearer "+token)
	req.TLS, req.RemoteAddr, req.Host = r.TLS, r.RemoteAddr, r.Host
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK {
		return nil
	}
	var e struct{ Message string }
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return fmt.Errorf("%d %s", rec.Code, e.Message)
}

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
