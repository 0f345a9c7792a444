package server

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/moby/buildkit/util/gitutil"
)

// gitRemote is a repository URL as BuildKit reads it: gitutil.ParseURL,
// the parser llb.Git itself uses, so that the scheme, host and user the
// server checks are those buildkitd fetches from. The server's own ref
// resolution reads URLs with go-git; a URL the two read differently (a
// different scheme or host) is refused rather than checked as one and
// fetched as another.
type gitRemote struct {
	// Scheme is https, http, ssh, git or file.
	Scheme string
	// Hostname and Port are the host's name (without brackets) and the
	// port given in the URL ("" for the scheme's own).
	Hostname, Port string
	// User is the URL's user name; HasPassword says it holds a password.
	User        string
	HasPassword bool
	// Path is the repository's path on the host.
	Path string
}

// host is the remote's host as host or host:port.
func (g gitRemote) host() string {
	if g.Port == "" {
		return g.Hostname
	}
	return net.JoinHostPort(g.Hostname, g.Port)
}

// parseGitRemote reads s as BuildKit will. Its errors say what is wrong
// without quoting s, which may hold credentials.
func parseGitRemote(s string) (gitRemote, error) {
	if strings.HasPrefix(s, "file://") {
		// BuildKit's parser has no file://; buildkitd passes such a URL
		// to git as it is.
		u, err := url.Parse(s)
		if err != nil || u.Host != "" {
			return gitRemote{}, errors.New("is not a file:// URL of a local path")
		}
		return gitRemote{Scheme: "file", Path: u.Path}, nil
	}
	g, err := gitutil.ParseURL(s)
	switch {
	case errors.Is(err, gitutil.ErrInvalidProtocol):
		return gitRemote{}, errors.New("has a scheme that is not supported; want https, ssh or git")
	case err != nil:
		return gitRemote{}, errors.New("is not a git URL: want https://, ssh://, git:// or user@host:path")
	case g.Opts != nil || g.Query != nil || strings.ContainsAny(s, "#?"):
		return gitRemote{}, errors.New("must not have a query or a #fragment; give the ref in git_commit")
	}
	hostname, port := g.Host, ""
	if h, p, err := net.SplitHostPort(g.Host); err == nil {
		hostname, port = h, p
	}
	hostname = strings.TrimSuffix(strings.TrimPrefix(hostname, "["), "]")
	r := gitRemote{Scheme: strings.ToLower(g.Scheme), Hostname: hostname, Port: port, Path: g.Path}
	if g.User != nil {
		r.User = g.User.Username()
		_, r.HasPassword = g.User.Password()
	}
	if err := sameAsGoGit(s, r); err != nil {
		return gitRemote{}, err
	}
	return r, nil
}

// sameAsGoGit checks that go-git reads s with r's scheme, host and port.
func sameAsGoGit(s string, r gitRemote) error {
	ep, err := transport.NewEndpoint(s)
	if err != nil {
		return errors.New("is not a git URL that every git client reads alike")
	}
	proto := strings.ToLower(ep.Protocol)
	if proto == "git+ssh" || proto == "ssh+git" {
		proto = "ssh"
	}
	port := ""
	if ep.Port != 0 && !(ep.Port == 22 && proto == "ssh" && r.Port == "") {
		port = strconv.Itoa(ep.Port)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(ep.Host, "["), "]")
	if proto != r.Scheme || !strings.EqualFold(host, r.Hostname) || port != r.Port {
		return errors.New("is read differently by git clients (scheme, host or port); write it as a plain https://, ssh:// or git:// URL")
	}
	return nil
}
