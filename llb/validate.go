package llb

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/util/gitutil"
)

// ErrInvalidSpec is wrapped by the errors Build returns for a Spec it
// cannot convert. The checks are minimal: the caller validates requests
// properly; these only keep a bad Spec from making a misleading graph.
var ErrInvalidSpec = errors.New("invalid build spec")

func validate(s Spec) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
	}
	if s.Repo == "" {
		return bad("repo is empty")
	}
	if err := checkRepo(s.Repo, s.KnownHosts); err != nil {
		return bad("repo %q: %v", s.Repo, err)
	}
	if !isSHA(s.Commit) {
		return bad("commit %q is not a full lowercase hex SHA (40 or 64 characters)", s.Commit)
	}
	if !localDir(s.Dir) {
		return bad("dir %q is not a relative path inside the repository", s.Dir)
	}
	if s.Package == "" {
		return bad("package is empty")
	}
	if s.Binary == "" || strings.Contains(s.Binary, "/") || s.Binary == "." || s.Binary == ".." {
		return bad("binary name %q is empty, a path or a dot name", s.Binary)
	}
	if s.Builder.Ref == "" {
		return bad("builder image is empty")
	}
	if s.Base.Ref == "" {
		return bad("base image is empty")
	}
	if s.BuildPlatform.OS == "" || s.BuildPlatform.Architecture == "" {
		return bad("build platform %+v lacks os or architecture", s.BuildPlatform)
	}
	if s.Platform.OS == "" || s.Platform.Architecture == "" {
		return bad("platform %+v lacks os or architecture", s.Platform)
	}
	if _, _, err := ParseUser(s.BuildUser); err != nil {
		return bad("build user: %v", err)
	}
	for _, name := range s.SecretEnv {
		if name == "" || strings.ContainsAny(name, "= \t\n\x00") {
			return bad("secret env name %q is not a variable name", name)
		}
	}
	return nil
}

// ParseUser parses a numeric "UID:GID", the form of Spec.BuildUser; "" is
// root (0, 0).
func ParseUser(u string) (uid, gid int, err error) {
	if u == "" {
		return 0, 0, nil
	}
	us, gs, ok := strings.Cut(u, ":")
	uid, err1 := strconv.Atoi(us)
	gid, err2 := strconv.Atoi(gs)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("%q is not a numeric UID:GID", u)
	}
	return uid, gid, nil
}

// checkRepo refuses the git URLs that would make the graph depend on more
// than the Spec: an SSH URL without known hosts (BuildKit's llb.Git would
// scan the host's keys over the network while marshalling), credentials in
// the URL (they belong in BuildKit secrets; an ssh user name is not one)
// and fragments (the commit is the only ref).
func checkRepo(repo, knownHosts string) error {
	u, err := gitutil.ParseURL(repo)
	if errors.Is(err, gitutil.ErrUnknownProtocol) {
		// llb.Git reads a bare host/path as https.
		u, err = gitutil.ParseURL("https://" + repo)
	}
	if err != nil {
		return err
	}
	ssh := u.Scheme == gitutil.SSHProtocol
	_, hasPassword := u.User.Password()
	switch {
	case ssh && strings.TrimSpace(knownHosts) == "":
		return errors.New("an ssh repository needs known hosts")
	case u.User != nil && (!ssh || hasPassword):
		return errors.New("credentials in the URL are not allowed")
	case strings.Contains(repo, "#"):
		return errors.New("a fragment is not allowed, the commit is the ref")
	case u.Host == "":
		return errors.New("no host")
	}
	return nil
}

// isSSH reports whether repo is an ssh URL (ssh:// or scp-like
// user@host:path).
func isSSH(repo string) bool {
	u, err := gitutil.ParseURL(repo)
	return err == nil && u.Scheme == gitutil.SSHProtocol
}

func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// localDir reports whether dir is a relative path that stays inside the
// repository ("." is the root).
func localDir(dir string) bool {
	if dir == "" || path.IsAbs(dir) {
		return false
	}
	c := path.Clean(dir)
	return c != ".." && !strings.HasPrefix(c, "../")
}
