package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/crypto/ssh"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Limits of the credential fields of a request.
const (
	MaxSecretLen       = 8 << 10  // a password, token or secret_env value, bytes
	MaxSSHKeyLen       = 16 << 10 // git_credentials.ssh_private_key, bytes
	MaxKnownHostsLen   = 64 << 10 // git_credentials.ssh_known_hosts, bytes
	MaxCredentialLists = 32       // registry_credentials and module_credentials entries
	MaxGoPrivateLen    = 2048     // goprivate, gonoproxy and gonosumdb, bytes
	MaxSecretEnv       = 32       // secret_env entries
)

var (
	// hostNameRE is a host name or IP address as netrc's machine.
	hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	// globListRE is a GOPRIVATE-style list: comma-separated path globs.
	globListRE = regexp.MustCompile(`^[A-Za-z0-9.,*?/_~\[\]-]*$`)
)

// requestCredentials are the secrets a request gave. They live in memory
// with the build and never go into its record.
type requestCredentials struct {
	git        credentials.Git
	knownHosts []byte
	modules    []credentials.Module
	registries []credentials.Registry
	secretEnv  map[string]string
}

// any reports whether the request gave any credential.
func (c *requestCredentials) any() bool {
	return c != nil && (!c.git.IsZero() || len(c.modules) > 0 || len(c.registries) > 0 || len(c.secretEnv) > 0)
}

// parseCredentials checks the credential fields of req (and the private
// module settings) into r. No error quotes a secret.
func parseCredentials(req *buildv1.CreateImageRequest, r *request, allow policy.Extra) error {
	c := &requestCredentials{secretEnv: map[string]string{}}
	if g := req.GetGitCredentials(); g != nil {
		if len(g.GetPassword()) > MaxSecretLen {
			return tooLong("git_credentials.password", len(g.GetPassword()), MaxSecretLen)
		}
		if len(g.GetSshPrivateKey()) > MaxSSHKeyLen {
			return tooLong("git_credentials.ssh_private_key", len(g.GetSshPrivateKey()), MaxSSHKeyLen)
		}
		if len(g.GetSshKnownHosts()) > MaxKnownHostsLen {
			return tooLong("git_credentials.ssh_known_hosts", len(g.GetSshKnownHosts()), MaxKnownHostsLen)
		}
		if err := checkName("git_credentials.username", g.GetUsername()); err != nil {
			return err
		}
		if g.GetUsername() != "" && g.GetPassword() == "" {
			return fieldErr("git_credentials.password", "is required with a username")
		}
		if k := g.GetSshPrivateKey(); len(k) > 0 {
			if _, err := ssh.ParseRawPrivateKey(k); err != nil {
				return fieldErr("git_credentials.ssh_private_key", "is not an unencrypted OpenSSH or PEM private key")
			}
		}
		if kh := g.GetSshKnownHosts(); len(kh) > 0 {
			if err := credentials.CheckKnownHosts(kh); err != nil {
				return fieldErr("git_credentials.ssh_known_hosts", "%v", err)
			}
		}
		c.git = credentials.Git{Username: g.GetUsername(), Password: g.GetPassword(), SSHKey: g.GetSshPrivateKey(), From: "request"}
		if c.git.Password != "" && c.git.Username == "" {
			c.git.Username = credentials.DefaultUsername
		}
		c.knownHosts = g.GetSshKnownHosts()
	}
	if n := len(req.GetRegistryCredentials()); n > MaxCredentialLists {
		return fieldErr("registry_credentials", "has %d entries; at most %d", n, MaxCredentialLists)
	}
	seen := map[string]bool{}
	for i, rc := range req.GetRegistryCredentials() {
		field := fmt.Sprintf("registry_credentials[%d]", i)
		if len(rc.GetRegistry()) > MaxImageRefLen {
			return tooLong(field+".registry", len(rc.GetRegistry()), MaxImageRefLen)
		}
		reg, err := name.NewRegistry(rc.GetRegistry(), name.StrictValidation)
		if err != nil || strings.Contains(rc.GetRegistry(), "/") {
			return fieldErr(field+".registry", "%s is not a registry host", quote(rc.GetRegistry()))
		}
		if seen[reg.RegistryStr()] {
			return fieldErr(field+".registry", "%s is given twice", quote(rc.GetRegistry()))
		}
		seen[reg.RegistryStr()] = true
		if len(rc.GetPassword()) > MaxSecretLen || len(rc.GetIdentityToken()) > MaxSecretLen {
			return tooLong(field+".password", max(len(rc.GetPassword()), len(rc.GetIdentityToken())), MaxSecretLen)
		}
		if err := checkName(field+".username", rc.GetUsername()); err != nil {
			return err
		}
		switch {
		case rc.GetIdentityToken() == "" && (rc.GetUsername() == "" || rc.GetPassword() == ""):
			return fieldErr(field, "needs a username and password, or an identity_token")
		case rc.GetIdentityToken() != "" && rc.GetPassword() != "":
			return fieldErr(field, "gives both a password and an identity_token")
		}
		c.registries = append(c.registries, credentials.Registry{
			Host: rc.GetRegistry(), Username: rc.GetUsername(), Password: rc.GetPassword(), IdentityToken: rc.GetIdentityToken(),
		})
	}
	if n := len(req.GetModuleCredentials()); n > MaxCredentialLists {
		return fieldErr("module_credentials", "has %d entries; at most %d", n, MaxCredentialLists)
	}
	for i, mc := range req.GetModuleCredentials() {
		field := fmt.Sprintf("module_credentials[%d]", i)
		if len(mc.GetHost()) > 253 || !hostNameRE.MatchString(mc.GetHost()) {
			return fieldErr(field+".host", "%s is not a host name (no scheme, no port)", quote(mc.GetHost()))
		}
		if err := checkName(field+".username", mc.GetUsername()); err != nil {
			return err
		}
		if mc.GetUsername() == "" || mc.GetPassword() == "" {
			return fieldErr(field, "needs a username and a password")
		}
		if len(mc.GetPassword()) > MaxSecretLen {
			return tooLong(field+".password", len(mc.GetPassword()), MaxSecretLen)
		}
		if strings.ContainsAny(mc.GetPassword(), " \t\r\n") {
			return fieldErr(field+".password", "must not contain white space (netrc cannot hold it)")
		}
		c.modules = append(c.modules, credentials.Module{Host: strings.ToLower(mc.GetHost()), Username: mc.GetUsername(), Password: mc.GetPassword(), From: "request"})
	}
	for _, f := range []struct {
		field string
		value string
		dst   *string
	}{
		{"goprivate", req.GetGoprivate(), &r.GoPrivate},
		{"gonoproxy", req.GetGonoproxy(), &r.GoNoProxy},
		{"gonosumdb", req.GetGonosumdb(), &r.GoNoSumDB},
	} {
		v := strings.TrimSpace(f.value)
		if len(v) > MaxGoPrivateLen {
			return tooLong(f.field, len(v), MaxGoPrivateLen)
		}
		if !globListRE.MatchString(v) {
			return fieldErr(f.field, "is not a comma-separated list of module path globs")
		}
		*f.dst = v
	}
	if n := len(req.GetSecretEnv()); n > MaxSecretEnv {
		return fieldErr("secret_env", "has %d entries; at most %d", n, MaxSecretEnv)
	}
	for _, k := range sortedKeys(req.GetSecretEnv()) {
		v := req.GetSecretEnv()[k]
		if len(k) > MaxEnvKeyLen || !envKeyRE.MatchString(k) {
			return fieldErr("secret_env", "%s is not a valid variable name", quote(k))
		}
		field := "secret_env[" + k + "]"
		if len(v) > MaxSecretLen {
			return tooLong(field, len(v), MaxSecretLen)
		}
		if reservedEnv[k] {
			return fieldErr(field, "is set by the service and can't be overridden")
		}
		if _, ok := r.Env[k]; ok {
			return fieldErr(field, "is also in env")
		}
		// The same allow-list as env; the reason never quotes the value.
		var fe *policy.BuildFlagError
		if err := policy.CheckEnv(k, v, allow); errors.As(err, &fe) {
			return fieldErr(field, "is not allowed (the value is not shown)")
		} else if err != nil {
			return fieldErr(field, "is not allowed")
		}
		c.secretEnv[k] = v
	}
	if c.any() || len(c.knownHosts) > 0 {
		r.creds = c
	}
	return nil
}

// checkName checks a user name of a credential: printable, no white space.
func checkName(field, v string) error {
	if len(v) > 256 {
		return tooLong(field, len(v), 256)
	}
	if strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f || r == ':' }) >= 0 {
		return fieldErr(field, "must not contain white space, control characters or ':'")
	}
	return nil
}

// isSSHRepo reports whether repo is an ssh URL (ssh:// or scp-like).
func isSSHRepo(repo string) bool {
	g, err := parseGitRemote(repo)
	return err == nil && g.Scheme == "ssh"
}

// urlHost is the host of repo as url.Parse sees it (BuildKit names the git
// auth secret after it): host[:port] for an https URL.
func urlHost(repo string) string {
	u, err := url.Parse(repo)
	if err != nil {
		return ""
	}
	return u.Host
}

// buildCredentials puts together the credentials of a build of tenant:
// the request's, then the server's rules for the repository's host, the
// module hosts' netrc entries (the request's, the repository's https
// credential, the server's rules for exact hosts, the GOPROXY's user info)
// and the known hosts. It fails for an ssh repository without a key or
// known hosts, naming the field.
func (s *Server) buildCredentials(tenant string, r *request) (*credentials.Build, error) {
	cfg := s.cfg.Credentials
	rc := r.creds
	if rc == nil {
		rc = &requestCredentials{}
	}
	host, err := repoHost(r.Repo)
	if err != nil {
		return nil, err
	}
	isSSH := isSSHRepo(r.Repo)
	b := &credentials.Build{
		Host:       host,
		RepoHost:   urlHost(r.Repo),
		Registries: rc.registries,
		SecretEnv:  rc.secretEnv,
	}
	b.Git = rc.git
	if isSSH && len(b.Git.SSHKey) == 0 {
		b.Git = credentials.Git{}
	}
	if !isSSH && b.Git.Password == "" {
		b.Git = credentials.Git{}
	}
	if b.Git.IsZero() {
		if g, ok := cfg.Git(tenant, host); ok {
			b.Git = g
		}
	}
	if isSSH {
		b.Git.Password = "" // https only
		if len(b.Git.SSHKey) == 0 {
			return nil, fieldErr("git_credentials.ssh_private_key", "an ssh repository needs a key: the server has none for %s and the request gave none", host)
		}
		b.KnownHosts = append(append([]byte{}, cfg.KnownHosts...), rc.knownHosts...)
		if len(strings.TrimSpace(string(b.KnownHosts))) == 0 {
			return nil, fieldErr("git_credentials.ssh_known_hosts", "an ssh repository needs the host's key: the server has no known hosts and the request gave none")
		}
	} else {
		b.Git.SSHKey = nil
	}
	b.Modules = append(b.Modules, rc.modules...)
	if !isSSH && b.Git.Password != "" {
		// The repository's host may serve Go modules too (GOPRIVATE).
		h := b.RepoHost
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		b.Modules = append(b.Modules, credentials.Module{Host: strings.ToLower(h), Username: b.Git.Username, Password: b.Git.Password, From: "git " + b.Git.From})
	}
	b.Modules = append(b.Modules, cfg.Modules(tenant)...)
	_, proxyCreds := credentials.ProxyCredentials(s.cfg.GoProxy)
	b.Modules = append(b.Modules, proxyCreds...)
	return b, nil
}

// resolveAuth is the egress credentials of the resolve of a build.
func (s *Server) resolveAuth(b *credentials.Build) egress.Auth {
	return egress.Auth{Username: b.Git.Username, Password: b.Git.Password, SSHKey: b.Git.SSHKey, KnownHosts: b.KnownHosts, RootCAs: s.rootCAs}
}
