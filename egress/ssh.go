package egress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyProblem is what is wrong with an ssh server's host key.
type HostKeyProblem int

// The problems of a host key (Failure.HostKey).
const (
	// HostKeyUnknown is a host Auth.KnownHosts has no key for.
	HostKeyUnknown HostKeyProblem = iota
	// HostKeyMismatch is a host Auth.KnownHosts has other keys for: the
	// key changed, or a connection is intercepted.
	HostKeyMismatch
	// HostKeyRevoked is a key an @revoked line of Auth.KnownHosts names.
	HostKeyRevoked
	// HostKeyCertRejected is a host certificate, signed by an authority an
	// @cert-authority line names, that is not valid for the host (expired,
	// another principal, revoked, ...).
	HostKeyCertRejected
)

// hostKeyText are the messages of Failure.Error for KindHostKey, of host
// and fingerprint.
var hostKeyText = map[HostKeyProblem]string{
	HostKeyUnknown:      "unknown ssh host key for %s (%s)",
	HostKeyMismatch:     "ssh host key mismatch for %s (%s)",
	HostKeyRevoked:      "revoked ssh host key for %s (%s)",
	HostKeyCertRejected: "ssh host certificate rejected for %s (%s)",
}

// hostKeyError is a host key the check refused.
type hostKeyError struct {
	host        string // host:port
	fingerprint string // SHA256:...
	problem     HostKeyProblem
	err         error
}

func (e *hostKeyError) Error() string {
	return fmt.Sprintf(hostKeyText[e.problem], e.host, e.fingerprint) + ": " + e.err.Error()
}

func (e *hostKeyError) Unwrap() error { return e.err }

// badAuth is an Auth that cannot be used; its text is fixed (Failure.Error
// shows it).
type badAuth string

func (e badAuth) Error() string { return string(e) }

const (
	errKeyInvalid        badAuth = "the ssh key does not parse"
	errKeyPassphrase     badAuth = "the ssh key is protected by a passphrase"
	errKnownHostsInvalid badAuth = "the known_hosts do not parse"
)

var (
	// errSSHAuth is an ssh server that accepted none of the credentials
	// given (or none were).
	errSSHAuth = errors.New("egress: the ssh server accepts none of the credentials given")
	// errNoListing is a remote that ended the session with an exit status
	// before listing refs: git's ssh servers do so for a repository that
	// does not exist or the key may not read (saying why on stderr, which
	// is not read).
	errNoListing = errors.New("egress: the remote command exited without listing refs")
)

// listSSH reads the ref advertisement of git-upload-pack run over ssh: one
// TCP connection, dialled by pol's dialer (no ssh_config, agent or proxy is
// consulted), the host key checked against auth.KnownHosts, then ends the
// exchange with a flush-pkt.
func listSSH(ctx context.Context, ep *transport.Endpoint, pol Policy, auth Auth) (*packp.AdvRefs, error) {
	port := ep.Port
	if port <= 0 {
		port = 22
	}
	hostPort := net.JoinHostPort(strings.Trim(ep.Host, "[]"), strconv.Itoa(port))
	cfg, err := sshConfig(ep, auth, hostPort)
	if err != nil {
		return nil, err
	}
	conn, done, err := dialBounded(ctx, pol, hostPort)
	if err != nil {
		return nil, err
	}
	defer done()

	c, chans, reqs, err := ssh.NewClientConn(conn, hostPort, cfg)
	if err != nil {
		return nil, err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := sess.Start(uploadPackCommand(ep.Path)); err != nil {
		return nil, err
	}
	ar := packp.NewAdvRefs()
	if err := ar.Decode(&capReader{r: stdout, left: MaxAdvertisement}); err != nil {
		var exit *ssh.ExitError
		switch {
		case errors.Is(err, packp.ErrEmptyAdvRefs):
			ar = packp.NewAdvRefs()
		case errors.Is(err, packp.ErrEmptyInput):
			if werr := sess.Wait(); errors.As(werr, &exit) {
				return nil, fmt.Errorf("%w: %w", errNoListing, werr)
			}
			return nil, err
		default:
			return nil, err
		}
	}
	_, _ = stdin.Write(pktline.FlushPkt) // nothing wanted: git-upload-pack ends quietly
	_ = stdin.Close()
	return ar, nil
}

// uploadPackCommand is the command git runs over ssh for path: the path
// quoted for a POSIX shell as git's sq_quote does, a "/~" prefix read as
// "~" (ssh://host/~user/repo is relative to user's home).
func uploadPackCommand(path string) string {
	if strings.HasPrefix(path, "/~") {
		path = path[1:]
	}
	var b strings.Builder
	b.WriteString(transport.UploadPackServiceName + " '")
	for _, c := range []byte(path) {
		if c == '\'' || c == '!' {
			b.WriteString(`'\`)
			b.WriteByte(c)
			b.WriteByte('\'')
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('\'')
	return b.String()
}

// sshConfig is the client configuration of a lookup of ep: its user, its
// key (the only method offered) and its host key check.
func sshConfig(ep *transport.Endpoint, auth Auth, hostPort string) (*ssh.ClientConfig, error) {
	user := cmp.Or(ep.User, auth.SSHUser, DefaultSSHUser)
	var methods []ssh.AuthMethod
	if len(auth.SSHKey) > 0 {
		signer, err := ssh.ParsePrivateKey(auth.SSHKey)
		if err != nil {
			// The parser's error is not kept: it may quote the key.
			if _, ok := errors.AsType[*ssh.PassphraseMissingError](err); ok {
				return nil, errKeyPassphrase
			}
			return nil, errKeyInvalid
		}
		methods = []ssh.AuthMethod{ssh.PublicKeys(signer)}
	}
	check, algos, err := hostKeyCheck(auth, hostPort)
	if err != nil {
		return nil, err
	}
	return &ssh.ClientConfig{
		User:              user,
		Auth:              methods,
		HostKeyCallback:   check,
		HostKeyAlgorithms: algos,
		// Before each attempt after the first ("none"): once the key was
		// refused, or the server does not take keys, fail with
		// errSSHAuth (x/crypto's own "unable to authenticate" has no
		// type to classify it by).
		AuthCallback: func(ac *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
			if len(methods) == 0 || slices.Contains(ac.TriedMethods, "publickey") ||
				!slices.Contains(ac.AllowedMethods, "publickey") {
				return nil, errSSHAuth
			}
			return nil, nil // the key of Auth
		},
	}, nil
}

// fallbackHostKeyAlgos are the host key algorithms offered after those of
// the known keys, in OpenSSH's order of preference (so the fingerprint of
// an unknown host is that of its ed25519 key, the one hosts publish
// first); no certificates.
var fallbackHostKeyAlgos = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// hostKeyCheck returns the host key check of auth for hostPort and the
// host key algorithms to offer: those of the keys KnownHosts has for the
// host first (so a server with several keys presents the one known, as
// OpenSSH arranges), then fallbackHostKeyAlgos: certificates only when
// KnownHosts trusts an authority for the host. A refused key is a
// *hostKeyError naming the host and the key's fingerprint.
func hostKeyCheck(auth Auth, hostPort string) (ssh.HostKeyCallback, []string, error) {
	if auth.InsecureIgnoreHostKey {
		return ssh.InsecureIgnoreHostKey(), nil, nil
	}
	db, err := knownHostsDB(auth.KnownHosts)
	if err != nil {
		return nil, nil, err
	}
	algos := db.HostKeyAlgorithms(hostPort)
	supported := ssh.SupportedAlgorithms().HostKeys
	for _, a := range fallbackHostKeyAlgos {
		if slices.Contains(supported, a) && !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	check := db.HostKeyCallback()
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		if err == nil {
			return nil
		}
		shown := key
		if cert, ok := key.(*ssh.Certificate); ok {
			shown = cert.Key
		}
		e := &hostKeyError{host: hostname, fingerprint: ssh.FingerprintSHA256(shown), err: err}
		var keyErr *xknownhosts.KeyError
		switch {
		case errors.As(err, new(*xknownhosts.RevokedError)):
			e.problem = HostKeyRevoked
		case errors.As(err, &keyErr) && len(keyErr.Want) > 0:
			e.problem = HostKeyMismatch
		case keyErr != nil:
			e.problem = HostKeyUnknown
		default: // CertChecker's untyped refusals of a certificate
			e.problem = HostKeyCertRejected
		}
		return e
	}, algos, nil
}

// knownHostsDB parses known_hosts content. The parsers read files only, so
// the content goes through a temporary file, removed once read (known_hosts
// are public keys: nothing secret is written).
func knownHostsDB(content []byte) (*knownhosts.HostKeyDB, error) {
	f, err := os.CreateTemp("", "egress-known-hosts-*")
	if err != nil {
		return nil, fmt.Errorf("egress: known_hosts: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("egress: known_hosts: %w", err)
	}
	db, err := knownhosts.NewDB(f.Name())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKnownHostsInvalid, err)
	}
	return db, nil
}
