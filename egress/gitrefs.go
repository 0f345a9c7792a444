package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// MaxAdvertisement bounds the bytes of a remote's ref listing read (a
// repository with every pull request's refs lists a few MiB).
const MaxAdvertisement = 64 << 20

// DefaultTimeout bounds a lookup whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// maxErrorBody bounds what is read of an HTTP error's body (go-git reads
// it whole; nothing of it is shown).
const maxErrorBody = 64 << 10

// Kind is the kind of a lookup's failure.
type Kind int

// The kinds of failure. Each has a fixed message (Failure.Error): nothing a
// remote sends ends up in one.
const (
	// KindProtocol is any other failure: the remote's answer is not a ref
	// listing, a redirect was refused, ...
	KindProtocol Kind = iota
	// KindRefused is a connection the host policy refused (the Failure
	// wraps the *Refused).
	KindRefused
	// KindTimeout is a lookup that ran out of time.
	KindTimeout
	// KindCanceled is a lookup whose context was cancelled.
	KindCanceled
	// KindConnRefused is a host that refused the connection.
	KindConnRefused
	// KindHostNotFound is a name DNS does not know.
	KindHostNotFound
	// KindUnreachable is a host that could not be reached (no route, DNS
	// failure) or closed the connection before answering.
	KindUnreachable
	// KindTLS is a failed TLS handshake (an untrusted certificate, ...).
	KindTLS
	// KindNotFound is a repository the remote says does not exist or is
	// not exported (HTTP 404, git's ERR line).
	KindNotFound
	// KindAuth is a repository that needs credentials, or refused the
	// ones given (HTTP 401; an ssh server that accepts none of them).
	KindAuth
	// KindDenied is a repository the remote refuses access to (HTTP 403).
	KindDenied
	// KindTooLarge is a ref listing over MaxAdvertisement.
	KindTooLarge
	// KindUnsupported is a URL scheme that is not looked up (git, http,
	// https and ssh are, and scp-like user@host:path).
	KindUnsupported
	// KindHostKey is an ssh host key the check refused: unknown to
	// Auth.KnownHosts, another than the one it has, ... (Failure.HostKey).
	// The message names the host and the fingerprint of the key the
	// server presented (Failure.Host, Failure.Fingerprint), both public,
	// so the key can be checked and added.
	KindHostKey
	// KindBadAuth is an Auth that cannot be used: an ssh key that does not
	// parse or has a passphrase, known_hosts that do not parse. Nothing
	// is dialled.
	KindBadAuth
)

var kindText = map[Kind]string{
	KindProtocol:     "protocol error",
	KindTimeout:      "timeout",
	KindCanceled:     "cancelled",
	KindConnRefused:  "connection refused",
	KindHostNotFound: "host not found",
	KindUnreachable:  "host unreachable",
	KindTLS:          "TLS handshake failed",
	KindNotFound:     "repository not found",
	KindAuth:         "authentication required",
	KindDenied:       "access denied",
	KindTooLarge:     "the ref listing is too large",
	KindUnsupported:  "unsupported URL scheme",
	KindHostKey:      "ssh host key refused",
	KindBadAuth:      "unusable credentials",
}

// Failure is a failed lookup. Its message says only the kind of failure
// (and an HTTP status code, or the ssh host and its key's fingerprint),
// never a credential or what the remote sent: the cause, which may hold
// what the remote sent, is kept for errors.As and the server's own log
// (it holds no credential either).
type Failure struct {
	Kind Kind
	// HTTPStatus is the status of an unexpected HTTP answer, else 0.
	HTTPStatus int
	// Host is the host:port of an ssh server whose key was refused
	// (KindHostKey), as in the URL.
	Host string
	// Fingerprint is the SHA256 fingerprint ("SHA256:...") of the host key
	// the server presented (KindHostKey; of the key a certificate
	// certifies).
	Fingerprint string
	// HostKey is what is wrong with the host key (KindHostKey).
	HostKey HostKeyProblem
	// credentials: the lookup sent some (KindAuth says "failed", not
	// "required").
	credentials bool
	cause       error
}

func (f *Failure) Error() string {
	var r *Refused
	var bad badAuth
	switch {
	case f.Kind == KindRefused && errors.As(f.cause, &r):
		return r.Error()
	case f.Kind == KindHostKey:
		return fmt.Sprintf(hostKeyText[f.HostKey], f.Host, f.Fingerprint)
	case f.Kind == KindBadAuth && errors.As(f.cause, &bad):
		return kindText[f.Kind] + ": " + bad.Error()
	case f.Kind == KindAuth && f.credentials:
		return "authentication failed"
	case f.HTTPStatus != 0:
		return fmt.Sprintf("%s (HTTP status %d)", kindText[f.Kind], f.HTTPStatus)
	}
	return kindText[f.Kind]
}

// Unwrap returns the cause.
func (f *Failure) Unwrap() error { return f.cause }

var errTooLarge = errors.New("the answer is larger than the lookup reads")

// Classify returns err as a *Failure of its kind (err itself if it is
// one).
func Classify(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	f = &Failure{cause: err}
	f.Kind, f.HTTPStatus = classify(err)
	if hk, ok := errors.AsType[*hostKeyError](err); ok && f.Kind == KindHostKey {
		f.Host, f.Fingerprint, f.HostKey = hk.host, hk.fingerprint, hk.problem
	}
	return f
}

func classify(err error) (Kind, int) {
	err = withGoGitCauses(err)
	var (
		refused  *Refused
		dnsErr   *net.DNSError
		netErr   net.Error
		errLine  *pktline.ErrorLine
		httpErr  *githttp.Err
		certErr  *tls.CertificateVerificationError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invErr   x509.CertificateInvalidError
		hostKey  *hostKeyError
		bad      badAuth
	)
	switch {
	case errors.As(err, &refused):
		return KindRefused, 0
	case errors.Is(err, context.Canceled):
		return KindCanceled, 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return KindTimeout, 0
	case errors.Is(err, errTooLarge):
		return KindTooLarge, 0
	case errors.As(err, &hostKey):
		return KindHostKey, 0
	case errors.As(err, &bad):
		return KindBadAuth, 0
	case errors.Is(err, errSSHAuth):
		return KindAuth, 0
	case errors.Is(err, errNoListing):
		return KindNotFound, 0
	case errors.Is(err, transport.ErrRepositoryNotFound), errors.As(err, &errLine):
		// git daemon answers a repository it does not serve with an
		// ERR line ("access denied or repository not exported").
		return KindNotFound, 0
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return KindAuth, 0
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return KindDenied, 0
	case errors.As(err, &httpErr):
		return KindProtocol, httpErr.StatusCode()
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindConnRefused, 0
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return KindHostNotFound, 0
	case errors.As(err, &certErr), errors.As(err, &alertErr), errors.As(err, &recErr),
		errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &invErr):
		return KindTLS, 0
	case errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout, 0
	case errors.As(err, &dnsErr), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF), errors.Is(err, packp.ErrEmptyInput):
		return KindUnreachable, 0
	}
	return KindProtocol, 0
}

// withGoGitCauses returns err joined with the errors go-git's
// UnexpectedError and PermanentError hold, which they do not unwrap.
func withGoGitCauses(err error) error {
	errs := []error{err}
	for cur := err; len(errs) < 8; errs = append(errs, cur) {
		var ue *plumbing.UnexpectedError
		var pe *plumbing.PermanentError
		switch {
		case errors.As(cur, &ue):
			cur = ue.Err
		case errors.As(cur, &pe):
			cur = pe.Err
		default:
			cur = nil
		}
		if cur == nil {
			break
		}
	}
	return errors.Join(errs...)
}

// ListRefs lists the refs of a remote repository, as `git ls-remote` does
// (no clone, no fetch), with peeled tags appended as "NAME^{}", over
// git://, http(s):// or ssh:// (and scp-like user@host:path), with the
// credentials of auth (the zero Auth is none). Every connection, redirects
// included, goes through the dialer of For(scheme, allow) (For("ssh",
// allow) for ssh). An empty repository has no refs. Errors are *Failure.
// Without a deadline in ctx, it takes at most DefaultTimeout.
func ListRefs(ctx context.Context, repo string, allow Allowance, auth Auth) ([]*plumbing.Reference, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	ep, err := transport.NewEndpoint(repo)
	if err != nil {
		return nil, &Failure{Kind: KindUnsupported, cause: err}
	}
	scheme := strings.ToLower(ep.Protocol)
	if scheme == "git+ssh" || scheme == "ssh+git" { // git's old spellings of ssh
		scheme = "ssh"
	}
	pol := For(scheme, allow)
	var ar *packp.AdvRefs
	switch scheme {
	case "git":
		ar, err = listGit(ctx, ep, pol)
	case "http", "https":
		ar, err = listHTTP(ctx, ep, pol, auth)
	case "ssh":
		ar, err = listSSH(ctx, ep, pol, auth)
	default:
		return nil, &Failure{Kind: KindUnsupported, cause: fmt.Errorf("scheme %.10q", ep.Protocol)}
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		f := Classify(err)
		f.credentials = auth.credentials(scheme)
		return nil, f
	}
	return references(ar)
}

func references(ar *packp.AdvRefs) ([]*plumbing.Reference, error) {
	if ar.IsEmpty() {
		return nil, nil
	}
	all, err := ar.AllReferences()
	if err != nil {
		return nil, Classify(err)
	}
	refs := make([]*plumbing.Reference, 0, len(all)+len(ar.Peeled))
	for _, r := range all {
		refs = append(refs, r)
	}
	for name, h := range ar.Peeled {
		refs = append(refs, plumbing.NewHashReference(plumbing.ReferenceName(name+"^{}"), h))
	}
	return refs, nil
}

// listGit reads the ref advertisement of git-upload-pack over git's own
// protocol (git://), then ends the exchange with a flush-pkt.
func listGit(ctx context.Context, ep *transport.Endpoint, pol Policy) (*packp.AdvRefs, error) {
	port := ep.Port
	if port <= 0 {
		port = 9418
	}
	conn, done, err := dialBounded(ctx, pol, net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	defer done()
	host := ep.Host
	if port != 9418 {
		host = net.JoinHostPort(ep.Host, strconv.Itoa(port))
	}
	req := packp.GitProtoRequest{RequestCommand: transport.UploadPackServiceName, Pathname: ep.Path, Host: host}
	if err := req.Encode(conn); err != nil {
		return nil, err
	}
	ar := packp.NewAdvRefs()
	if err := ar.Decode(&capReader{r: conn, left: MaxAdvertisement}); err != nil {
		if !errors.Is(err, packp.ErrEmptyAdvRefs) {
			return nil, err
		}
		ar = packp.NewAdvRefs()
	}
	_, _ = conn.Write(pktline.FlushPkt) // nothing wanted: git-upload-pack ends quietly
	return ar, nil
}

// dialBounded dials addr with pol's dialer; the connection's deadline is
// ctx's, and cancelling ctx wakes a blocked read or write. done stops that
// and closes the connection.
func dialBounded(ctx context.Context, pol Policy, addr string) (_ net.Conn, done func(), _ error) {
	conn, err := pol.Dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return conn, func() { stop(); conn.Close() }, nil
}

// listHTTP reads the ref advertisement of git's smart HTTP protocol with
// go-git's client on a transport of its own: every connection is dialled
// by pol's dialer, and no proxy is used (through one, the policy could not
// see where a connection goes). auth's basic auth goes to the URL's origin
// only (originAuth); its RootCAs are trusted besides the system's.
func listHTTP(ctx context.Context, ep *transport.Endpoint, pol Policy, auth Auth) (*packp.AdvRefs, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(auth.RootCAs) > 0 {
		tlsConf.RootCAs = rootPool(auth.RootCAs)
	}
	tr := &http.Transport{
		DialContext:            pol.Dialer().DialContext,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    DialTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableKeepAlives:      true,
		ForceAttemptHTTP2:      true,
	}
	defer tr.CloseIdleConnections()
	rt := &originAuth{rt: capBodies{tr}, origin: endpointOrigin(ep), set: auth.basic(), user: auth.Username, pass: auth.Password}
	c := githttp.NewClientWithOptions(&http.Client{Transport: rt},
		&githttp.ClientOptions{RedirectPolicy: githttp.FollowInitialRedirects})
	s, err := c.NewUploadPackSession(ep, nil)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ar, err := s.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return packp.NewAdvRefs(), nil
	}
	return ar, err
}

// capBodies bounds the response bodies read: MaxAdvertisement of a
// successful answer, maxErrorBody of another.
type capBodies struct{ rt http.RoundTripper }

func (c capBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit := int64(MaxAdvertisement)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		limit = maxErrorBody
	}
	resp.Body = &capReadCloser{capReader{r: resp.Body, left: limit}, resp.Body}
	return resp, nil
}

// capReader reads at most left bytes, then fails with errTooLarge.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

type capReadCloser struct {
	capReader
	io.Closer
}
