package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Tenant is what one tenant's builds may do. A zero field means no limit
// (or, for the lists, anything), except BaseImages: empty allows only the
// server's default base image.
type Tenant struct {
	// GitHosts are the git hosts the tenant may build from, as host or
	// host:port, "*.example.com" for any subdomain; empty allows any host.
	GitHosts []string `yaml:"git_hosts"`
	// ImageTags are prefixes the image tag must start with, as the server
	// writes tags in full (e.g. "registry.example/team-a/").
	ImageTags []string `yaml:"image_tags"`
	// BaseImages are prefixes of the base images a request may name, besides
	// the server's default.
	BaseImages []string `yaml:"base_images"`
	// MaxRunning and MaxQueued bound the tenant's builds running and
	// waiting at once, within the server's own limits.
	MaxRunning int `yaml:"max_running"`
	MaxQueued  int `yaml:"max_queued"`
	// MaxTimeout is the longest timeout the tenant's requests may ask for.
	MaxTimeout Duration `yaml:"max_timeout"`
	// RatePerMinute bounds how many builds the tenant may start a minute,
	// with bursts of Burst (default: the rate, at least 1).
	RatePerMinute float64 `yaml:"rate_per_minute"`
	Burst         int     `yaml:"burst"`
	// Allow widens the allow-lists of flags and variables for the tenant.
	Allow Extra `yaml:"allow"`
	// RegistryCredentials names the server's registry credentials (see the
	// server's registry-credentials) the tenant's builds pull and push
	// with: empty for the server's docker config, NoCredentials for none.
	RegistryCredentials string `yaml:"registry_credentials"`
	// AllowLoopback, AllowPrivate, AllowAnyPort and AllowedPorts widen the
	// host policy of the server's own connections when it resolves the
	// tenant's refs (package egress): to loopback addresses, to private
	// addresses, to any port, or to these ports besides the protocol's
	// usual ones. They add to what the server allows every tenant.
	AllowLoopback bool  `yaml:"allow_loopback"`
	AllowPrivate  bool  `yaml:"allow_private"`
	AllowAnyPort  bool  `yaml:"allow_any_port"`
	AllowedPorts  []int `yaml:"allowed_ports"`
}

// Duration is a time.Duration written as Go writes durations ("90s").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 90s or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// NoCredentials as a tenant's RegistryCredentials gives its builds no
// registry credentials of the server's at all.
const NoCredentials = "none"

// Policies are every tenant's policy: Defaults for every tenant, and per
// tenant what differs from them.
type Policies struct {
	// Defaults apply to every tenant; a tenant's own policy overrides each
	// field it sets.
	Defaults Tenant `yaml:"defaults"`
	// Tenants are the tenants' own policies, by tenant name.
	Tenants map[string]Tenant `yaml:"tenants"`
}

var tenantNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// LoadPolicies reads a tenants file (YAML, see Policies).
func LoadPolicies(file string) (*Policies, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tenants file: %w", err)
	}
	p, err := ParsePolicies(data)
	if err != nil {
		return nil, fmt.Errorf("tenants file %s: %w", file, err)
	}
	return p, nil
}

// ParsePolicies parses a tenants file. Unknown keys are errors.
func ParsePolicies(data []byte) (*Policies, error) {
	var p Policies
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, err
	}
	if err := p.Defaults.check("defaults"); err != nil {
		return nil, err
	}
	for name, t := range p.Tenants {
		if !tenantNameRE.MatchString(name) {
			return nil, fmt.Errorf("tenants: %q is not a tenant name ([a-z0-9][a-z0-9-]{0,62})", name)
		}
		if err := t.check("tenants." + name); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

func (t Tenant) check(where string) error {
	for _, h := range t.GitHosts {
		if h == "" || strings.ContainsAny(h, "/@ ") || strings.Count(h, "*") > 1 || strings.Contains(h, "*") && !strings.HasPrefix(h, "*.") {
			return fmt.Errorf("%s.git_hosts: %q is not host, host:port or *.domain", where, short(h))
		}
	}
	for _, list := range [][]string{t.ImageTags, t.BaseImages} {
		if slices.Contains(list, "") {
			return fmt.Errorf("%s: an empty prefix allows everything; leave the list out instead", where)
		}
	}
	if t.MaxRunning < 0 || t.MaxQueued < 0 || t.RatePerMinute < 0 || t.Burst < 0 {
		return fmt.Errorf("%s: limits must not be negative", where)
	}
	for _, p := range t.AllowedPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s.allowed_ports: %d is not a port (1-65535)", where, p)
		}
	}
	return nil
}

// For returns tenant's policy: its own fields over the defaults.
func (p *Policies) For(tenant string) Tenant {
	if p == nil {
		return Tenant{}
	}
	t := p.Defaults
	own, ok := p.Tenants[tenant]
	if !ok {
		return t
	}
	if own.GitHosts != nil {
		t.GitHosts = own.GitHosts
	}
	if own.ImageTags != nil {
		t.ImageTags = own.ImageTags
	}
	if own.BaseImages != nil {
		t.BaseImages = own.BaseImages
	}
	if own.MaxRunning != 0 {
		t.MaxRunning = own.MaxRunning
	}
	if own.MaxQueued != 0 {
		t.MaxQueued = own.MaxQueued
	}
	if own.MaxTimeout != 0 {
		t.MaxTimeout = own.MaxTimeout
	}
	if own.RegistryCredentials != "" {
		t.RegistryCredentials = own.RegistryCredentials
	}
	if own.RatePerMinute != 0 {
		t.RatePerMinute, t.Burst = own.RatePerMinute, own.Burst
	}
	t.Allow = t.Allow.Add(own.Allow)
	t.AllowLoopback = t.AllowLoopback || own.AllowLoopback
	t.AllowPrivate = t.AllowPrivate || own.AllowPrivate
	t.AllowAnyPort = t.AllowAnyPort || own.AllowAnyPort
	t.AllowedPorts = append(slices.Clone(t.AllowedPorts), own.AllowedPorts...)
	return t
}

// Denied is a request outside its tenant's policy.
type Denied struct {
	// Field is the request field, e.g. "git_repo".
	Field string
	// Rule is the policy rule, e.g. "git_hosts".
	Rule string
	// Reason says what of the request the rule refuses.
	Reason string
}

func (e *Denied) Error() string {
	return fmt.Sprintf("%s: not allowed by the tenant's policy (%s): %s", e.Field, e.Rule, e.Reason)
}

// CheckGitHost checks the host (host or host:port, as in the URL) of a
// request's repository against GitHosts.
func (t Tenant) CheckGitHost(hostport string) error {
	if len(t.GitHosts) == 0 {
		return nil
	}
	host := strings.ToLower(hostport)
	bare := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		bare = h
	}
	for _, pat := range t.GitHosts {
		pat = strings.ToLower(pat)
		target := bare
		if _, _, err := net.SplitHostPort(pat); err == nil {
			target = host // the pattern names a port: match host:port
		}
		if domain, ok := strings.CutPrefix(pat, "*"); ok {
			if strings.HasSuffix(target, domain) && len(target) > len(domain) {
				return nil
			}
		} else if target == pat {
			return nil
		}
	}
	return &Denied{Field: "git_repo", Rule: "git_hosts", Reason: fmt.Sprintf("host %s is not one of the tenant's git hosts", short(hostport))}
}

// CheckImageTag checks a full image tag against ImageTags.
func (t Tenant) CheckImageTag(tag string) error {
	if len(t.ImageTags) == 0 || hasPrefix(tag, t.ImageTags) {
		return nil
	}
	return &Denied{Field: "image_tag", Rule: "image_tags", Reason: fmt.Sprintf("%s does not start with one of %s", short(tag), strings.Join(t.ImageTags, ", "))}
}

// CheckBaseImage checks a base image a request names (not the server's
// default) against BaseImages.
func (t Tenant) CheckBaseImage(ref string) error {
	if hasPrefix(ref, t.BaseImages) {
		return nil
	}
	return &Denied{Field: "base_image", Rule: "base_images", Reason: fmt.Sprintf("%s is not one of the tenant's base images", short(ref))}
}

// CheckTimeout checks the timeout a request asks for against MaxTimeout.
func (t Tenant) CheckTimeout(d time.Duration) error {
	if t.MaxTimeout == 0 || d <= time.Duration(t.MaxTimeout) {
		return nil
	}
	return &Denied{Field: "timeout", Rule: "max_timeout", Reason: fmt.Sprintf("%s is longer than %s", d, time.Duration(t.MaxTimeout))}
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
