// Package credentials holds the credentials a build uses for private
// sources: git hosts (https tokens and passwords, ssh keys with known
// hosts), Go module hosts and registries, from the server's configuration
// and from the request. It serves them to buildkitd only through the
// build's session, as BuildKit secrets, a forwarded ssh agent and registry
// auth, and it lists every secret value of a build so that the server can
// mask them in anything it shows or keeps.
package credentials

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// DefaultUsername is the https user name of a token given without one:
// GitHub, GitLab and Gitea take a token as the password of any user, and
// this is the name GitHub documents.
const DefaultUsername = "x-access-token"

// Git is a credential for one git host: a user name and password (or
// token) for https, or a private key for ssh.
type Git struct {
	// Username and Password are for https basic auth.
	Username string
	Password string
	// SSHKey is an unencrypted private key (OpenSSH or PEM) for ssh.
	SSHKey []byte
	// From says where the credential came from: "request" or "server"
	// (the server's rule for Pattern).
	From string
}

// IsZero reports whether g holds no credential.
func (g Git) IsZero() bool { return g.Password == "" && len(g.SSHKey) == 0 }

// Kind says what g is, for messages and the build record: never a value.
func (g Git) Kind() string {
	switch {
	case len(g.SSHKey) > 0 && g.Password != "":
		return fmt.Sprintf("https password for user %s and ssh key (%s)", g.Username, g.From)
	case len(g.SSHKey) > 0:
		return fmt.Sprintf("ssh key (%s)", g.From)
	case g.Password != "":
		return fmt.Sprintf("https password for user %s (%s)", g.Username, g.From)
	}
	return "no credentials"
}

// Rule is one entry of the server's credentials file: the credentials of
// the git (and Go module) hosts that match Host.
type Rule struct {
	// Host is a host name, optionally with a port (git.internal.example,
	// git.internal.example:8443), or a pattern "*.corp.example" that
	// matches every name below corp.example (not corp.example itself).
	Host string `yaml:"host"`
	// Username for https; DefaultUsername when empty.
	Username string `yaml:"username"`
	// PasswordFile holds the https password or token (surrounding white
	// space is trimmed).
	PasswordFile string `yaml:"password_file"`
	// SSHKeyFile holds an unencrypted ssh private key.
	SSHKeyFile string `yaml:"ssh_key_file"`
	// Tenants may use the rule; empty means every tenant.
	Tenants []string `yaml:"tenants"`

	git Git
}

// File is the server's credentials file (the credentials option), YAML:
//
//	hosts:
//	  - host: git.internal.example
//	    password_file: /etc/buildsvc/git-token
//	  - host: "*.corp.example"
//	    username: builder
//	    password_file: /etc/buildsvc/corp-password
//	    ssh_key_file: /etc/buildsvc/corp-key
//	    tenants: [payments]
type File struct {
	Hosts []Rule `yaml:"hosts"`
}

// Config is what the server knows of private sources.
type Config struct {
	// Rules are the host credentials, first match wins.
	Rules []Rule
	// KnownHosts is known_hosts content (OpenSSH format) that ssh host keys
	// are checked against.
	KnownHosts []byte
	// CABundle is PEM certificates of internal CAs, trusted (in addition to
	// the system's) for git, module and registry hosts.
	CABundle []byte
	// GoPrivate, GoNoProxy and GoNoSumDB are the server's GOPRIVATE,
	// GONOPROXY and GONOSUMDB for every build; a request's add to them.
	GoPrivate, GoNoProxy, GoNoSumDB string
}

// LoadFile reads a credentials file and the secrets it names. A rule must
// name a password file, a key file or both; a key must parse.
func LoadFile(path string) ([]Rule, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("credentials: %s: %w", path, err)
	}
	for i := range f.Hosts {
		r := &f.Hosts[i]
		where := fmt.Sprintf("credentials: %s: hosts[%d]", path, i)
		if err := CheckPattern(r.Host); err != nil {
			return nil, fmt.Errorf("%s: host: %w", where, err)
		}
		if r.PasswordFile == "" && r.SSHKeyFile == "" {
			return nil, fmt.Errorf("%s (%s): needs password_file or ssh_key_file", where, r.Host)
		}
		r.git = Git{Username: r.Username, From: "server, host " + r.Host}
		if r.git.Username == "" {
			r.git.Username = DefaultUsername
		}
		if r.PasswordFile != "" {
			b, err := os.ReadFile(r.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", where, r.Host, err)
			}
			r.git.Password = strings.TrimSpace(string(b))
			if r.git.Password == "" {
				return nil, fmt.Errorf("%s (%s): %s is empty", where, r.Host, r.PasswordFile)
			}
		}
		if r.SSHKeyFile != "" {
			b, err := os.ReadFile(r.SSHKeyFile)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", where, r.Host, err)
			}
			if _, err := ssh.ParsePrivateKey(b); err != nil {
				return nil, fmt.Errorf("%s (%s): %s is not an unencrypted ssh private key", where, r.Host, r.SSHKeyFile)
			}
			r.git.SSHKey = b
		}
	}
	return f.Hosts, nil
}

// Git returns the credential of the first rule that matches host (a host
// name, or host:port) and that tenant may use.
func (c *Config) Git(tenant, host string) (Git, bool) {
	if c == nil {
		return Git{}, false
	}
	for _, r := range c.Rules {
		if len(r.Tenants) > 0 && !slices.Contains(r.Tenants, tenant) {
			continue
		}
		if Match(r.Host, host) {
			return r.git, true
		}
	}
	return Git{}, false
}

// Modules returns the netrc entries of the rules tenant may use that have
// a password and name one host (netrc has no patterns): the host's module
// downloads (GOPRIVATE, straight from git) use them.
func (c *Config) Modules(tenant string) []Module {
	if c == nil {
		return nil
	}
	var mods []Module
	for _, r := range c.Rules {
		if r.git.Password == "" || strings.HasPrefix(r.Host, "*.") || (len(r.Tenants) > 0 && !slices.Contains(r.Tenants, tenant)) {
			continue
		}
		h, _ := splitHostPort(strings.ToLower(r.Host))
		mods = append(mods, Module{Host: h, Username: r.git.Username, Password: r.git.Password, From: r.git.From})
	}
	return mods
}

// TenantModules reports whether tenant has netrc entries that not every
// tenant has (rules limited to some tenants): its module downloads may then
// fetch what others may not.
func (c *Config) TenantModules(tenant string) bool {
	if c == nil {
		return false
	}
	for _, r := range c.Rules {
		if len(r.Tenants) > 0 && slices.Contains(r.Tenants, tenant) && r.git.Password != "" {
			return true
		}
	}
	return false
}

// CheckPattern checks a host pattern of a rule.
func CheckPattern(p string) error {
	h := strings.TrimPrefix(p, "*.")
	if h == "" {
		return errors.New("is empty")
	}
	if strings.ContainsAny(h, "*/@ \t") {
		return fmt.Errorf("%q: want a host name, host:port or *.domain", p)
	}
	if _, _, err := net.SplitHostPort(h); err != nil && strings.Count(h, ":") > 0 && !strings.HasPrefix(h, "[") {
		return fmt.Errorf("%q: bad port", p)
	}
	return nil
}

// Match reports whether host (a name or name:port, as in a URL) matches
// pattern. Names compare case-insensitively. A pattern without a port
// matches the host on any port; one with a port, only on that port.
// "*.corp.example" matches a.corp.example and a.b.corp.example.
func Match(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	pname, pport := splitHostPort(strings.TrimPrefix(pattern, "*."))
	hname, hport := splitHostPort(host)
	if pport != "" && pport != hport {
		return false
	}
	if strings.HasPrefix(pattern, "*.") {
		return strings.HasSuffix(hname, "."+pname)
	}
	return hname == pname
}

func splitHostPort(h string) (string, string) {
	if name, port, err := net.SplitHostPort(h); err == nil {
		return name, port
	}
	return strings.Trim(h, "[]"), ""
}

// CheckKnownHosts checks that every line of known_hosts content that is not
// empty or a comment parses; the error names the first line that does not.
func CheckKnownHosts(b []byte) error {
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts([]byte(line)); err != nil {
			return fmt.Errorf("line %d is not a known_hosts line", i+1)
		}
	}
	return nil
}
