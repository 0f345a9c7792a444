package egress

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// DefaultSSHUser is the ssh user of a URL that names none, without
// Auth.SSHUser.
const DefaultSSHUser = "git"

// Auth is the credentials of one lookup. The zero value is none: public
// repositories only, as before credentials existed. Fields that do not
// apply to the URL's scheme are ignored (git:// has no authentication).
// Its String and GoString name the fields that are set, never their
// values.
type Auth struct {
	// Username and Password are sent as HTTP basic auth (a token is the
	// password; which username a host wants with a token is the caller's
	// business). They are sent only to the origin of the repository's URL
	// (its scheme, host and port): not to a redirect to another host,
	// port or scheme (http to https included), so never over plain http
	// unless the URL is plain http. They take the place of credentials in
	// the URL.
	Username, Password string

	// SSHKey is the private key of ssh:// and scp-like (user@host:path)
	// URLs, PEM or OpenSSH format, without a passphrase. Without it, an
	// ssh server that wants a key fails the lookup with KindAuth.
	SSHKey []byte
	// SSHUser is the ssh user when the URL names none; empty is
	// DefaultSSHUser.
	SSHUser string
	// KnownHosts is known_hosts content (OpenSSH format; hashed names,
	// wildcards, @cert-authority and @revoked lines too) the ssh server's
	// host key is checked against: a host it has no key for fails with
	// KindHostKey and HostKeyUnknown, one whose key differs with
	// HostKeyMismatch. Without it every host is unknown.
	KnownHosts []byte
	// InsecureIgnoreHostKey accepts any ssh host key (KnownHosts is then
	// not used): only for a deployment that explicitly configures it.
	InsecureIgnoreHostKey bool

	// RootCAs are trusted for https besides the system's roots (an
	// internal CA). RootCAsFromPEM reads a PEM bundle.
	RootCAs []*x509.Certificate
}

// basic reports whether a has HTTP credentials.
func (a Auth) basic() bool { return a.Username != "" || a.Password != "" }

// credentials reports whether a has credentials for a URL scheme.
func (a Auth) credentials(scheme string) bool {
	switch scheme {
	case "http", "https":
		return a.basic()
	case "ssh":
		return len(a.SSHKey) > 0
	}
	return false
}

// String names the fields of a that are set, without their values.
func (a Auth) String() string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"Username", a.Username != ""},
		{"Password", a.Password != ""},
		{"SSHKey", len(a.SSHKey) > 0},
		{"SSHUser", a.SSHUser != ""},
		{"KnownHosts", len(a.KnownHosts) > 0},
		{"InsecureIgnoreHostKey", a.InsecureIgnoreHostKey},
		{"RootCAs", len(a.RootCAs) > 0},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return "egress.Auth{" + strings.Join(set, ", ") + "}"
}

// GoString is String, so %#v does not print the secrets either.
func (a Auth) GoString() string { return a.String() }

// RootCAsFromPEM returns the certificates of a PEM bundle (blocks other
// than CERTIFICATE are skipped), for Auth.RootCAs. A bundle without a
// certificate is an error.
func RootCAsFromPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("egress: certificate %d of the bundle: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("egress: the bundle has no PEM certificate")
	}
	return certs, nil
}

// rootPool returns the system's roots with extra added (a copy: the
// system's pool is not changed).
func rootPool(extra []*x509.Certificate) *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range extra {
		pool.AddCert(c)
	}
	return pool
}

// originAuth sends basic auth to one origin only. It is the last word on
// the Authorization header of every request the lookup sends: go-git and
// net/http already drop credentials on a redirect that leaves the origin
// (go-git's wrapCheckRedirect keeps only its own headers once a chain has
// left it), and originAuth removes any Authorization header of a request
// to another origin regardless, so no credential leaves the origin even if
// that changes.
type originAuth struct {
	rt     http.RoundTripper
	origin string // from urlOrigin
	set    bool   // send user and pass to origin
	user   string
	pass   string
}

func (a *originAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	same := urlOrigin(req.URL) == a.origin
	switch {
	case same && a.set:
		req = req.Clone(req.Context())
		req.SetBasicAuth(a.user, a.pass)
	case !same && (req.Header.Get("Authorization") != "" || req.URL.User != nil):
		req = req.Clone(req.Context())
		req.Header.Del("Authorization")
		req.URL.User = nil
	}
	return a.rt.RoundTrip(req)
}

// endpointOrigin is the origin of a repository's http(s) endpoint.
func endpointOrigin(ep *transport.Endpoint) string {
	port := ""
	if ep.Port > 0 {
		port = strconv.Itoa(ep.Port)
	}
	return origin(ep.Protocol, strings.Trim(ep.Host, "[]"), port)
}

// urlOrigin is the origin of a request's URL.
func urlOrigin(u *url.URL) string {
	if u == nil {
		return ""
	}
	return origin(u.Scheme, u.Hostname(), u.Port())
}

// origin is "scheme://host:port" in one spelling: the scheme lowercase, an
// address literal as netip prints it, a name ASCII-lowercased (nothing
// else: a Unicode fold could join names DNS keeps apart), and the port
// without leading zeroes, the scheme's default if none.
func origin(scheme, host, port string) string {
	scheme = strings.ToLower(scheme)
	if addr, err := netip.ParseAddr(host); err == nil {
		host = addr.String()
	} else {
		b := []byte(host)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		host = string(b)
	}
	if n, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(n)
	} else {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
