package credentials

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/session/secrets/secretsprovider"

	"github.com/buildsvc/buildsvc/llb"
)

// Module is a netrc entry: credentials for one Go module host.
type Module struct {
	// Host is netrc's machine: a host name without port.
	Host     string
	Username string
	Password string
	// From says where the entry came from, for the build record.
	From string
}

// Registry is a credential for one registry, from the request.
type Registry struct {
	// Host is the registry as in an image reference (docker.io,
	// 127.0.0.1:5000).
	Host          string
	Username      string
	Password      string
	IdentityToken string
}

// Build is the credentials of one build. It lives in memory for the
// build's life; nothing of it is stored.
type Build struct {
	// Host is the repository's host (and port), whatever its scheme, for
	// messages.
	Host string
	// RepoHost is the host (and port) of the repository URL, as BuildKit
	// names it in the git auth secret's id.
	RepoHost string
	// Git is the repository's credential (the request's, else the server's
	// rule for RepoHost).
	Git Git
	// KnownHosts are the known_hosts lines ssh host keys are checked
	// against: the server's and the request's.
	KnownHosts []byte
	// Modules are the netrc entries of `go mod download`.
	Modules []Module
	// Registries are the request's registry credentials; they win over the
	// server's docker config for their hosts.
	Registries []Registry
	// SecretEnv is the request's secret environment of the build steps.
	SecretEnv map[string]string
}

// RepoHostName is Host, or a description when it is unknown.
func (b *Build) RepoHostName() string {
	if b == nil || b.Host == "" {
		return "the repository's host"
	}
	return b.Host
}

// Netrc returns the netrc file of the download step, or nil if there are no
// module credentials. The first entry for a host wins (as in netrc).
func (b *Build) Netrc() []byte {
	var buf bytes.Buffer
	seen := map[string]bool{}
	for _, m := range b.Modules {
		h := strings.ToLower(m.Host)
		if seen[h] {
			continue
		}
		seen[h] = true
		fmt.Fprintf(&buf, "machine %s\nlogin %s\npassword %s\n", h, netrcToken(m.Username), netrcToken(m.Password))
	}
	if buf.Len() == 0 {
		return nil
	}
	return buf.Bytes()
}

// netrcToken quotes a netrc token that holds white space or a quote. Go's
// netrc reader splits on white space only, so such values cannot be given
// to it; they are passed quoted for curl, which reads quotes.
func netrcToken(s string) string {
	if !strings.ContainsAny(s, " \t\n\r\"") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// authHeader is the Authorization header value of the https credential.
func (g Git) authHeader() string {
	return "basic " + base64.StdEncoding.EncodeToString([]byte(cmp.Or(g.Username, DefaultUsername)+":"+g.Password))
}

// GitAuthSecretID is the id of the session secret BuildKit's git source
// reads its Authorization header from for a repository on host: its
// default header secret name, scoped to the host.
func GitAuthSecretID(host string) string { return bkllb.GitAuthHeaderKey + "." + host }

// SecretEnvID is the id of the session secret of a secret_env variable.
func SecretEnvID(name string) string { return llb.SecretEnvIDPrefix + name }

// Secrets returns the build's session secrets by id: the git Authorization
// header, the netrc file and the secret environment.
func (b *Build) Secrets() map[string][]byte {
	m := map[string][]byte{}
	if b.Git.Password != "" && b.RepoHost != "" {
		m[GitAuthSecretID(b.RepoHost)] = []byte(b.Git.authHeader())
	}
	if n := b.Netrc(); n != nil {
		m[llb.NetrcSecretID] = n
	}
	for k, v := range b.SecretEnv {
		m[SecretEnvID(k)] = []byte(v)
	}
	return m
}

// SecretEnvNames returns the names of the secret environment, sorted.
func (b *Build) SecretEnvNames() []string {
	names := make([]string, 0, len(b.SecretEnv))
	for k := range b.SecretEnv {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Attachables returns the session attachables of the build: registry auth
// (the request's registries, then docker, the server's docker config for
// the build's tenant), the secrets, and the ssh forwarding of the ssh agent
// holding the repository's key if it has one and of the given sockets.
func (b *Build) Attachables(docker *configfile.ConfigFile, sockets ...Socket) ([]session.Attachable, error) {
	out := []session.Attachable{
		authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
			AuthConfigProvider: b.registryAuth(docker),
		}),
		secretsprovider.FromMap(b.Secrets()),
	}
	if len(b.Git.SSHKey) > 0 {
		a, err := agentSocket(llb.GitSSHID, b.Git.SSHKey)
		if err != nil {
			return nil, err
		}
		sockets = append([]Socket{a}, sockets...)
	}
	if len(sockets) > 0 {
		f := &forwarder{sockets: map[string]func(net.Conn){}}
		for _, s := range sockets {
			if _, dup := f.sockets[s.ID]; dup {
				return nil, fmt.Errorf("two sockets with the id %q", s.ID)
			}
			f.sockets[s.ID] = s.Serve
		}
		out = append(out, f)
	}
	return out, nil
}

// registryKey is how a registry host is named in a docker config.
func registryKey(host string) string {
	switch strings.ToLower(host) {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return authprovider.DockerHubConfigfileKey
	}
	return strings.ToLower(host)
}

func (b *Build) registryAuth(docker *configfile.ConfigFile) authprovider.AuthConfigProvider {
	if docker == nil {
		docker = configfile.New("")
	}
	fallback := authprovider.LoadAuthConfig(docker)
	mine := map[string]types.AuthConfig{}
	for _, r := range b.Registries {
		k := registryKey(r.Host)
		mine[k] = types.AuthConfig{Username: r.Username, Password: r.Password, IdentityToken: r.IdentityToken, ServerAddress: k}
	}
	return func(ctx context.Context, host string, scopes []string, check authprovider.ExpireCachedAuthCheck) (types.AuthConfig, error) {
		if ac, ok := mine[registryKey(host)]; ok {
			return ac, nil
		}
		return fallback(ctx, host, scopes, check)
	}
}

// RegistriesFor returns the request's credentials for the registry host
// (as go-containerregistry names it: index.docker.io for Docker Hub).
func (b *Build) RegistriesFor(host string) []Registry {
	if b == nil {
		return nil
	}
	var out []Registry
	for _, r := range b.Registries {
		if registryKey(r.Host) == registryKey(host) {
			out = append(out, r)
		}
	}
	return out
}

// Values returns every secret value of the build, and the forms in which
// it may travel (an Authorization header, base64 of user:password, the
// netrc file, each line of a key), for masking.
func (b *Build) Values() []string {
	var v []string
	add := func(s ...string) {
		for _, x := range s {
			if len(x) >= minMasked {
				v = append(v, x)
			}
		}
	}
	if b.Git.Password != "" {
		h := b.Git.authHeader()
		add(b.Git.Password, h, strings.TrimPrefix(h, "basic "))
	}
	if len(b.Git.SSHKey) > 0 {
		add(string(b.Git.SSHKey))
		for _, l := range strings.Split(string(b.Git.SSHKey), "\n") {
			if l = strings.TrimSpace(l); !strings.HasPrefix(l, "-----") {
				add(l)
			}
		}
	}
	for _, m := range b.Modules {
		add(m.Password, base64.StdEncoding.EncodeToString([]byte(m.Username+":"+m.Password)))
	}
	for _, r := range b.Registries {
		add(r.Password, r.IdentityToken, base64.StdEncoding.EncodeToString([]byte(r.Username+":"+r.Password)))
	}
	for _, k := range b.SecretEnvNames() {
		add(b.SecretEnv[k])
	}
	slices.Sort(v)
	return slices.Compact(v)
}

// minMasked is the shortest value masked: shorter ones would mask common
// words of the output and say little.
const minMasked = 4

// ProxyCredentials splits the user info off every URL of a GOPROXY list
// ("https://u:p@proxy.internal,https://proxy.golang.org,direct"): the list
// without it, which may go into a build's environment, and the user info as
// netrc entries (Go sends netrc credentials to a proxy's host).
func ProxyCredentials(goproxy string) (string, []Module) {
	if goproxy == "" {
		return "", nil
	}
	var mods []Module
	// GOPROXY separates with ',' (fall through on 404/410) or '|' (on any
	// error); keep the separators as they are.
	var out strings.Builder
	start := 0
	emit := func(part string) {
		u, err := url.Parse(part)
		if err != nil || u.User == nil || u.Host == "" {
			out.WriteString(part)
			return
		}
		pass, _ := u.User.Password()
		mods = append(mods, Module{Host: u.Hostname(), Username: u.User.Username(), Password: pass, From: "server GOPROXY"})
		u.User = nil
		out.WriteString(u.String())
	}
	for i := 0; i < len(goproxy); i++ {
		if goproxy[i] == ',' || goproxy[i] == '|' {
			emit(goproxy[start:i])
			out.WriteByte(goproxy[i])
			start = i + 1
		}
	}
	emit(goproxy[start:])
	return out.String(), mods
}

// Given describes the credentials a request gave, never their values, for
// the build record.
func Given(b *Build) []string {
	var g []string
	if b == nil {
		return nil
	}
	if b.Git.From == "request" {
		g = append(g, "git: "+b.Git.Kind())
	}
	for _, m := range b.Modules {
		if m.From == "request" {
			g = append(g, "module host "+m.Host+": password for user "+m.Username)
		}
	}
	for _, r := range b.Registries {
		kind := "password for user " + r.Username
		if r.IdentityToken != "" {
			kind = "identity token"
		}
		g = append(g, "registry "+r.Host+": "+kind)
	}
	for _, k := range b.SecretEnvNames() {
		g = append(g, "secret_env "+k)
	}
	return g
}
