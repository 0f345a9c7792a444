package egress

import (
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

const (
	testUser     = "x-access-token"
	testPassword = "ghp_s3cr3t-T0ken-Pw"
)

// noSecrets fails if err's message, or its cause's (which the server logs),
// has a secret: a password whole, a key (anything longer than 40
// characters) in any 16 characters of it.
func noSecrets(t *testing.T, what string, err error, secrets ...string) {
	t.Helper()
	texts := []string{err.Error()}
	if u := errors.Unwrap(err); u != nil {
		texts = append(texts, u.Error())
	}
	for _, s := range secrets {
		var parts []string
		if len(s) <= 40 {
			parts = []string{s}
		} else {
			body := strings.Join(pemBody(s), "")
			for i := 0; i+16 <= len(body); i += 8 {
				parts = append(parts, body[i:i+16])
			}
		}
		for _, text := range texts {
			for _, p := range parts {
				if strings.Contains(text, p) {
					t.Errorf("%s: %q has a secret (%q)", what, text, p)
					return
				}
			}
		}
	}
}

// pemBody is the base64 lines of a PEM text (the whole text if none).
func pemBody(s string) []string {
	var lines []string
	for l := range strings.SplitSeq(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			lines = append(lines, l)
		}
	}
	return lines
}

// wantFailure checks err is a *Failure of kind want with message msg (if
// not empty), and returns it.
func wantFailure(t *testing.T, what string, err error, want Kind, msg string) *Failure {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) || f.Kind != want {
		t.Errorf("%s: %v (%#v), want a failure of kind %q", what, err, err, kindText[want])
		return nil
	}
	if msg != "" && f.Error() != msg {
		t.Errorf("%s: message %q, want %q", what, f.Error(), msg)
	}
	if strings.Contains(f.Error(), secret) {
		t.Errorf("%s: message %q repeats the remote", what, f.Error())
	}
	return f
}

func TestListRefsHTTPSAuth(t *testing.T) {
	r := makeRepos(t)
	ca, other := newTestCA(t, "internal CA"), newTestCA(t, "another CA")
	srv := startGitHTTP(t, r.root, &ca, testUser, testPassword)
	srv.redirect("moved.git", srv.URL+"/repo.git") // same origin: the credentials follow
	right := Auth{Username: testUser, Password: testPassword, RootCAs: []*x509.Certificate{ca.cert}}
	tests := []struct {
		name string
		repo string
		auth Auth
		kind Kind // -1: the refs of repo.git
		msg  string
	}{
		{"right credentials", "repo.git", right, -1, ""},
		{"same-origin redirect", "moved.git", right, -1, ""},
		{"no credentials", "repo.git", Auth{RootCAs: right.RootCAs}, KindAuth, "authentication required"},
		{"wrong password", "repo.git", Auth{Username: testUser, Password: "wrong-" + testPassword, RootCAs: right.RootCAs}, KindAuth, "authentication failed"},
		{"wrong username", "repo.git", Auth{Username: "someone", Password: testPassword, RootCAs: right.RootCAs}, KindAuth, "authentication failed"},
		{"untrusted certificate", "repo.git", Auth{Username: testUser, Password: testPassword}, KindTLS, "TLS handshake failed"},
		{"another CA", "repo.git", Auth{Username: testUser, Password: testPassword, RootCAs: []*x509.Certificate{other.cert}}, KindTLS, ""},
		{"missing repository", "missing.git", right, KindNotFound, "repository not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := ListRefs(t.Context(), srv.URL+"/"+tt.repo, local, tt.auth)
			if tt.kind == -1 {
				if err != nil {
					t.Fatal(err)
				}
				r.check(t, tt.name, refs)
				return
			}
			wantFailure(t, tt.name, err, tt.kind, tt.msg)
			noSecrets(t, tt.name, err, testPassword, "wrong-"+testPassword)
		})
	}
	refs, err := ListRefs(t.Context(), srv.URL+"/empty.git", local, right)
	if err != nil || len(refs) != 0 {
		t.Errorf("empty repository: %v, %v; want no refs", refs, err)
	}
	// The credentials went with every request the lookups above sent
	// with them, and in no other form.
	for _, req := range srv.requests() {
		if a := req.authorization; a != "" && !strings.HasPrefix(a, "Basic ") {
			t.Errorf("%s: Authorization %q", req.path, a)
		}
	}
}

// Basic auth goes to the repository URL's origin only: not to a redirect
// to another host, another port, or plain http (which go-git refuses
// before dialling); over plain http only when the URL is plain http.
func TestListRefsCredentialsStayOnOrigin(t *testing.T) {
	r := makeRepos(t)
	ca := newTestCA(t, "internal CA")
	auth := Auth{Username: testUser, Password: testPassword, RootCAs: []*x509.Certificate{ca.cert}}
	origin := startGitHTTP(t, r.root, &ca, testUser, testPassword)
	elsewhere := startGitHTTP(t, r.root, &ca, testUser, testPassword)
	plain := listen(t)
	origin.redirect("other-host.git", fmt.Sprintf("https://localhost:%d/repo.git", elsewhere.port()))
	origin.redirect("other-port.git", fmt.Sprintf("https://127.0.0.1:%d/repo.git", elsewhere.port()))
	origin.redirect("downgrade.git", fmt.Sprintf("http://127.0.0.1:%d/repo.git", plain.port()))

	for _, name := range []string{"other-host.git", "other-port.git"} {
		before := len(elsewhere.requests())
		_, err := ListRefs(t.Context(), origin.URL+"/"+name, local, auth)
		// The target wants credentials and got none.
		wantFailure(t, name, err, KindAuth, "")
		got := elsewhere.requests()[before:]
		if len(got) == 0 {
			t.Fatalf("%s: the redirect's target saw no request", name)
		}
		for _, req := range got {
			if req.authorization != "" {
				t.Errorf("%s: the target on another origin got Authorization %q", name, req.authorization)
			}
		}
	}
	_, err := ListRefs(t.Context(), origin.URL+"/downgrade.git", local, auth)
	wantFailure(t, "downgrade", err, KindProtocol, "")
	plain.assertNoConnection(t)

	// A plain http URL gets its credentials.
	insecure := startGitHTTP(t, r.root, nil, testUser, testPassword)
	refs, err := ListRefs(t.Context(), insecure.URL+"/repo.git", local, auth)
	if err != nil {
		t.Fatalf("plain http: %v", err)
	}
	r.check(t, "plain http", refs)
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		repo, req string
		same      bool
	}{
		{"https://example.com/x.git", "https://example.com/x.git/info/refs", true},
		{"https://Example.COM/x.git", "https://example.com:443/y.git/info/refs", true},
		{"https://example.com:0443/x.git", "https://example.com/y", true},
		{"http://example.com/x.git", "http://example.com:80/x.git", true},
		{"https://[::1]/x.git", "https://[0:0::1]:443/x.git", true},
		{"https://u:p@example.com/x.git", "https://example.com/x.git", true},
		{"https://example.com/x.git", "http://example.com/x.git", false},
		{"http://example.com/x.git", "https://example.com/x.git", false}, // no upgrade either
		{"https://example.com/x.git", "https://example.com:8443/x.git", false},
		{"https://example.com/x.git", "https://www.example.com/x.git", false},
		{"https://example.com/x.git", "https://example.com./x.git", false},
		{"https://127.0.0.1/x.git", "https://localhost/x.git", false},
		{"https://127.0.0.1/x.git", "https://[::ffff:127.0.0.1]/x.git", false},
	}
	for _, tt := range tests {
		ep, err := transport.NewEndpoint(tt.repo)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := endpointOrigin(ep) == urlOrigin(u); got != tt.same {
			t.Errorf("%s, %s: same origin %v (%s, %s), want %v", tt.repo, tt.req, got, endpointOrigin(ep), urlOrigin(u), tt.same)
		}
	}
}

func TestListRefsSSH(t *testing.T) {
	r := makeRepos(t)
	client, stranger := newSSHKey(t), newSSHKey(t)
	hostEd, hostEC := newSSHKey(t).signer, newECDSAHostKey(t, elliptic.P256())
	srv := startSSH(t, r.root, client.signer.PublicKey(), hostEd, hostEC)
	fpEd, fpEC := ssh.FingerprintSHA256(hostEd.PublicKey()), ssh.FingerprintSHA256(hostEC.PublicKey())
	line := func(host string, key ssh.PublicKey) string { return xknownhosts.Line([]string{host}, key) + "\n" }
	known := line(srv.addr, hostEd.PublicKey())
	knownEC := line(srv.addr, hostEC.PublicKey())
	hashed := line(xknownhosts.HashHostname(xknownhosts.Normalize(srv.addr)), hostEd.PublicKey())
	wrong := line(srv.addr, newSSHKey(t).signer.PublicKey())
	otherHost := line("127.0.0.2:"+strconv.Itoa(srv.port), hostEd.PublicKey())
	p384 := line(srv.addr, newECDSAHostKey(t, elliptic.P384()).PublicKey())

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	withPassphrase := pem.EncodeToMemory(block)

	sshURL := func(user, repo string) string {
		if user != "" {
			user += "@"
		}
		return fmt.Sprintf("ssh://%s%s/%s", user, srv.addr, repo)
	}
	withKey := func(knownHosts string) Auth {
		return Auth{SSHKey: client.pem, KnownHosts: []byte(knownHosts)}
	}
	hostKeyMsg := func(f, problem string) string {
		return fmt.Sprintf("%s ssh host key for %s (%s)", problem, srv.addr, f)
	}
	tests := []struct {
		name    string
		url     string
		auth    Auth
		kind    Kind // -1: the refs of repo.git
		msg     string
		problem HostKeyProblem
		fp      string // of KindHostKey
		command string // the command the server ran, if any
		user    string // the user the server saw, if any
		dials   bool   // the server sees a connection
	}{
		{name: "key and known host", url: sshURL("git", "repo.git"), auth: withKey(known), kind: -1,
			command: "git-upload-pack '/repo.git'", user: "git", dials: true},
		{name: "scp-like", url: fmt.Sprintf("git@127.0.0.1:%d:repo.git", srv.port), auth: withKey(known), kind: -1,
			command: "git-upload-pack 'repo.git'", user: "git", dials: true},
		{name: "default user", url: sshURL("", "repo.git"), auth: withKey(known), kind: -1, user: "git", dials: true},
		{name: "SSHUser", url: sshURL("", "repo.git"), auth: Auth{SSHKey: client.pem, SSHUser: "alice", KnownHosts: []byte(known)},
			kind: KindAuth, msg: "authentication failed", user: "alice", dials: true},
		{name: "the URL's user over SSHUser", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: client.pem, SSHUser: "alice", KnownHosts: []byte(known)},
			kind: -1, user: "git", dials: true},
		{name: "git+ssh", url: "git+" + sshURL("git", "repo.git"), auth: withKey(known), kind: -1, dials: true},
		{name: "hashed known host", url: sshURL("git", "repo.git"), auth: withKey("# comment\n" + otherHost + hashed), kind: -1, dials: true},
		// The server has an ECDSA key too, which x/crypto would prefer
		// without the known key's algorithm first: a false mismatch.
		{name: "known ed25519 key of two", url: sshURL("git", "repo.git"), auth: withKey(known), kind: -1, dials: true},
		{name: "known ECDSA key of two", url: sshURL("git", "repo.git"), auth: withKey(knownEC), kind: -1, dials: true},
		{name: "insecure ignore host key", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: client.pem, InsecureIgnoreHostKey: true}, kind: -1, dials: true},
		{name: "insecure ignores known_hosts", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: client.pem, KnownHosts: []byte(wrong), InsecureIgnoreHostKey: true}, kind: -1, dials: true},
		{name: "empty repository", url: sshURL("git", "empty.git"), auth: withKey(known), kind: -2, dials: true},

		{name: "unknown host", url: sshURL("git", "repo.git"), auth: withKey(otherHost), kind: KindHostKey,
			msg: hostKeyMsg(fpEd, "unknown"), problem: HostKeyUnknown, fp: fpEd, dials: true},
		{name: "no known_hosts", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: client.pem}, kind: KindHostKey,
			msg: hostKeyMsg(fpEd, "unknown"), problem: HostKeyUnknown, fp: fpEd, dials: true},
		{name: "another key in known_hosts", url: sshURL("git", "repo.git"), auth: withKey(wrong), kind: KindHostKey,
			msg: "ssh host key mismatch for " + srv.addr + " (" + fpEd + ")", problem: HostKeyMismatch, fp: fpEd, dials: true},
		{name: "a key of a type the server lacks", url: sshURL("git", "repo.git"), auth: withKey(p384), kind: KindHostKey,
			problem: HostKeyMismatch, fp: fpEd, dials: true},
		{name: "revoked", url: sshURL("git", "repo.git"), auth: withKey("@revoked * " + strings.TrimPrefix(known, xknownhosts.Normalize(srv.addr)+" ")),
			kind: KindHostKey, msg: hostKeyMsg(fpEd, "revoked"), problem: HostKeyRevoked, fp: fpEd, dials: true},
		{name: "ECDSA mismatch", url: sshURL("git", "repo.git"), auth: withKey(line(srv.addr, newECDSAHostKey(t, elliptic.P256()).PublicKey())),
			kind: KindHostKey, problem: HostKeyMismatch, fp: fpEC, dials: true},

		{name: "wrong client key", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: stranger.pem, KnownHosts: []byte(known)},
			kind: KindAuth, msg: "authentication failed", user: "git", dials: true},
		{name: "no client key", url: sshURL("git", "repo.git"), auth: Auth{KnownHosts: []byte(known)},
			kind: KindAuth, msg: "authentication required", dials: true},
		{name: "missing repository", url: sshURL("git", "missing.git"), auth: withKey(known), kind: KindNotFound,
			msg: "repository not found", command: "git-upload-pack '/missing.git'", dials: true},

		{name: "key with a passphrase", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: withPassphrase, KnownHosts: []byte(known)},
			kind: KindBadAuth, msg: "unusable credentials: the ssh key is protected by a passphrase"},
		{name: "not a key", url: sshURL("git", "repo.git"), auth: Auth{SSHKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n" + testPassword + "\n-----END OPENSSH PRIVATE KEY-----\n"), KnownHosts: []byte(known)},
			kind: KindBadAuth, msg: "unusable credentials: the ssh key does not parse"},
		{name: "bad known_hosts", url: sshURL("git", "repo.git"), auth: withKey("[127.0.0.1]:22 ssh-ed25519 !!!\n"),
			kind: KindBadAuth, msg: "unusable credentials: the known_hosts do not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conns := srv.conns.Load()
			users, commands := srv.seen()
			refs, err := ListRefs(t.Context(), tt.url, local, tt.auth)
			switch tt.kind {
			case -1:
				if err != nil {
					t.Fatal(err)
				}
				r.check(t, tt.name, refs)
			case -2:
				if err != nil || len(refs) != 0 {
					t.Errorf("%v, %v; want no refs", refs, err)
				}
			default:
				f := wantFailure(t, tt.name, err, tt.kind, tt.msg)
				if f != nil && tt.kind == KindHostKey && (f.HostKey != tt.problem || f.Host != srv.addr || f.Fingerprint != tt.fp) {
					t.Errorf("host key failure %+v, want %v for %s (%s)", f, tt.problem, srv.addr, tt.fp)
				}
				if f != nil && tt.kind == KindHostKey && !strings.Contains(f.Error(), srv.addr) {
					t.Errorf("%q does not name %s", f.Error(), srv.addr)
				}
				noSecrets(t, tt.name, err, string(client.pem), string(stranger.pem), string(withPassphrase), testPassword)
			}
			if dialled := srv.conns.Load() > conns; dialled != tt.dials {
				t.Errorf("the server saw a connection: %v, want %v", dialled, tt.dials)
			}
			users2, commands2 := srv.seen()
			if tt.command != "" && (len(commands2) != len(commands)+1 || commands2[len(commands2)-1] != tt.command) {
				t.Errorf("commands %q, want %q last", commands2[len(commands):], tt.command)
			}
			if tt.user != "" && (len(users2) == len(users) || users2[len(users2)-1] != tt.user) {
				t.Errorf("users %q, want %q", users2[len(users):], tt.user)
			}
		})
	}
}

// The host policy applies to ssh as to the other schemes: loopback is
// refused without the allowance, ports other than 22 without theirs, by
// address or name, before connecting.
func TestListRefsSSHPolicy(t *testing.T) {
	l := listen(t)
	auth := Auth{SSHKey: newSSHKey(t).pem, InsecureIgnoreHostKey: true}
	tests := []struct {
		url   string
		allow Allowance
		rule  Rule
	}{
		{fmt.Sprintf("ssh://git@127.0.0.1:%d/x.git", l.port()), Allowance{AnyPort: true}, RuleLoopback},
		{fmt.Sprintf("ssh://git@localhost:%d/x.git", l.port()), Allowance{AnyPort: true}, RuleLoopback},
		{fmt.Sprintf("ssh://git@127.0.0.1:%d/x.git", l.port()), Allowance{Loopback: true}, RulePort},
		{fmt.Sprintf("git@127.0.0.1:%d:x.git", l.port()), Allowance{Private: true, AnyPort: true}, RuleLoopback},
		{"git@127.0.0.1:x.git", Allowance{}, RuleLoopback}, // port 22
		{"ssh://git@10.1.2.3/x.git", Allowance{Loopback: true}, RulePrivate},
	}
	for _, tt := range tests {
		_, err := ListRefs(t.Context(), tt.url, tt.allow, auth)
		wantFailure(t, tt.url, err, KindRefused, "")
		var r *Refused
		if !errors.As(err, &r) || r.Rule != tt.rule {
			t.Errorf("%s with %+v: %v, want refused by %s", tt.url, tt.allow, err, tt.rule)
		}
		if r != nil && r.Rule == RulePort && r.AllowedPorts() != "22" {
			t.Errorf("%s: allowed ports %s, want 22", tt.url, r.AllowedPorts())
		}
	}
	l.assertNoConnection(t)
}

func TestUploadPackCommand(t *testing.T) {
	for path, want := range map[string]string{
		"/repo.git":        `git-upload-pack '/repo.git'`,
		"org/repo.git":     `git-upload-pack 'org/repo.git'`,
		"/~alice/repo.git": `git-upload-pack '~alice/repo.git'`,
		"/a b/it's!.git":   `git-upload-pack '/a b/it'\''s'\!'.git'`,
		"/$(reboot)`x`":    "git-upload-pack '/$(reboot)`x`'",
	} {
		if got := uploadPackCommand(path); got != want {
			t.Errorf("uploadPackCommand(%q) = %s, want %s", path, got, want)
		}
	}
}

// Printing an Auth shows which fields are set, never their values.
func TestAuthString(t *testing.T) {
	key := newSSHKey(t)
	a := Auth{Username: "user-Q1", Password: testPassword, SSHKey: key.pem, KnownHosts: []byte("known-Q2")}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), fmt.Sprintf("%s", &a)} {
		if strings.Contains(s, "user-Q1") || strings.Contains(s, testPassword) || strings.Contains(s, "known-Q2") ||
			strings.Contains(s, pemBody(string(key.pem))[0]) {
			t.Errorf("%s has a value", s)
		}
		if s != "egress.Auth{Username, Password, SSHKey, KnownHosts}" {
			t.Errorf("%s", s)
		}
	}
}

func TestRootCAsFromPEM(t *testing.T) {
	ca, other := newTestCA(t, "one"), newTestCA(t, "two")
	bundle := append(append(append([]byte("a comment\n"), ca.pem...), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})...), other.pem...)
	certs, err := RootCAsFromPEM(bundle)
	if err != nil || len(certs) != 2 || !certs[0].Equal(ca.cert) || !certs[1].Equal(other.cert) {
		t.Errorf("RootCAsFromPEM = %v, %v", certs, err)
	}
	for name, bad := range map[string][]byte{
		"empty":          nil,
		"no PEM":         []byte("not a certificate"),
		"no cert":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}),
		"not a cert":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}),
		"one bad of two": append(append([]byte{}, ca.pem...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})...),
	} {
		if certs, err := RootCAsFromPEM(bad); err == nil {
			t.Errorf("%s: %v, want an error", name, certs)
		}
	}
}
