package modproxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// userPrefix starts every username [Proxy.Credentials] issues.
const userPrefix = "b-"

// buildIDRE is the syntax of a build id that can be put in a netrc file and a username.
var buildIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Credentials returns the basic-auth credentials a build uses for the scope: the
// username is "b-"+buildID and the password hex(HMAC-SHA256(key, scope+"\x00"+buildID)).
// They are valid for that scope only and name the build in [Proxy.BuildStats]. The
// build id must match [A-Za-z0-9._-]{1,128} and the scope [ValidScope]; other values
// give credentials the handler refuses.
func (p *Proxy) Credentials(scope, buildID string) (username, password string) {
	return userPrefix + buildID, p.password(scope, buildID)
}

func (p *Proxy) password(scope, buildID string) string {
	m := hmac.New(sha256.New, p.opts.key)
	m.Write([]byte(scope))
	m.Write([]byte{0})
	m.Write([]byte(buildID))
	return hex.EncodeToString(m.Sum(nil))
}

// Netrc returns a netrc file giving the build's credentials for the scope to machine,
// which must be the proxy's host:port exactly as in GOPROXY (the go command matches
// netrc machines against host:port, and sends them only over https).
func (p *Proxy) Netrc(machine, scope, buildID string) ([]byte, error) {
	if machine == "" || strings.ContainsAny(machine, " \t\r\n#/") {
		return nil, fmt.Errorf("modproxy: invalid netrc machine %q", machine)
	}
	if !ValidScope(scope) {
		return nil, fmt.Errorf("modproxy: invalid scope %q", scope)
	}
	if !buildIDRE.MatchString(buildID) {
		return nil, fmt.Errorf("modproxy: invalid build id %q", buildID)
	}
	user, pass := p.Credentials(scope, buildID)
	return fmt.Appendf(nil, "machine %s login %s password %s\n", machine, user, pass), nil
}

// authenticate checks r's basic auth against scope and returns the build id.
func (p *Proxy) authenticate(r *http.Request, scope string) (buildID string, ok bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	buildID, ok = strings.CutPrefix(user, userPrefix)
	if !ok || !buildIDRE.MatchString(buildID) {
		return "", false
	}
	if !hmac.Equal([]byte(pass), []byte(p.password(scope, buildID))) {
		return "", false
	}
	return buildID, true
}
