package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const tenantsFile = `
defaults:
  git_hosts: ["github.com", "*.git.example", "127.0.0.1:19418"]
  max_running: 2
  max_queued: 10
  max_timeout: 30m
tenants:
  team-a:
    image_tags: ["registry.example/team-a/"]
    base_images: ["registry.example/base/"]
    max_running: 4
  tools:
    git_hosts: ["git.tools.example"]
    rate_per_minute: 6
    burst: 2
    allow:
      build_flags: ["-toolexec"]
`

func TestPolicies(t *testing.T) {
	p, err := ParsePolicies([]byte(tenantsFile))
	if err != nil {
		t.Fatal(err)
	}
	a, tools, other := p.For("team-a"), p.For("tools"), p.For("nobody")
	if a.MaxRunning != 4 || a.MaxQueued != 10 || time.Duration(a.MaxTimeout) != 30*time.Minute || len(a.GitHosts) != 3 {
		t.Errorf("team-a = %+v: want its own max_running over the defaults", a)
	}
	if other.MaxRunning != 2 || other.ImageTags != nil {
		t.Errorf("an unlisted tenant = %+v, want the defaults", other)
	}
	if tools.RatePerMinute != 6 || tools.Burst != 2 || len(tools.Allow.BuildFlags) != 1 {
		t.Errorf("tools = %+v", tools)
	}
	if got := (*Policies)(nil).For("x"); got.MaxRunning != 0 || got.GitHosts != nil {
		t.Errorf("no policies = %+v, want no limits", got)
	}

	checks := []struct {
		name  string
		err   error
		field string // "" means allowed
	}{
		{"listed host", a.CheckGitHost("github.com"), ""},
		{"host in another case", a.CheckGitHost("GitHub.com"), ""},
		{"subdomain", a.CheckGitHost("team.git.example"), ""},
		{"the wildcard's own domain", a.CheckGitHost("git.example"), "git_repo"},
		{"a look-alike", a.CheckGitHost("evilgit.example"), "git_repo"},
		{"host with the listed port", a.CheckGitHost("127.0.0.1:19418"), ""},
		{"host with another port", a.CheckGitHost("127.0.0.1:22"), "git_repo"},
		{"host without a port, pattern with one", a.CheckGitHost("127.0.0.1"), "git_repo"},
		{"listed host on another port", a.CheckGitHost("github.com:8443"), ""},
		{"unlisted host", a.CheckGitHost("gitlab.com"), "git_repo"},
		{"metadata address", a.CheckGitHost("169.254.169.254"), "git_repo"},
		{"own hosts only", tools.CheckGitHost("github.com"), "git_repo"},
		{"tag", a.CheckImageTag("registry.example/team-a/app:v1"), ""},
		{"another team's tag", a.CheckImageTag("registry.example/team-b/app:v1"), "image_tag"},
		{"any tag", other.CheckImageTag("anything.example/x:1"), ""},
		{"base", a.CheckBaseImage("registry.example/base/static:1"), ""},
		{"other base", a.CheckBaseImage("docker.io/library/alpine:3"), "base_image"},
		{"no bases listed", other.CheckBaseImage("registry.example/base/static:1"), "base_image"},
		{"timeout", a.CheckTimeout(30 * time.Minute), ""},
		{"long timeout", a.CheckTimeout(31 * time.Minute), "timeout"},
	}
	for _, c := range checks {
		var d *Denied
		switch {
		case c.field == "" && c.err != nil:
			t.Errorf("%s: refused: %v", c.name, c.err)
		case c.field != "" && (!errors.As(c.err, &d) || d.Field != c.field || d.Rule == ""):
			t.Errorf("%s: err = %v, want Denied for %s naming the rule", c.name, c.err, c.field)
		}
	}
}

func TestParsePoliciesErrors(t *testing.T) {
	for _, bad := range []string{
		"defaults: {max_runing: 2}",
		"tenants: {Team_A: {}}",
		"defaults: {git_hosts: ['https://github.com']}",
		"defaults: {git_hosts: ['git*.example']}",
		"defaults: {image_tags: ['']}",
		"defaults: {max_running: -1}",
		"defaults: {max_timeout: soon}",
		"tenants: {a: {allow: {build_flag: [-x]}}}",
	} {
		if _, err := ParsePolicies([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		} else if strings.Contains(err.Error(), "\n") && len(err.Error()) > 300 {
			t.Errorf("%q: long error %q", bad, err)
		}
	}
	if p, err := ParsePolicies(nil); err != nil || p.For("x").MaxRunning != 0 {
		t.Errorf("an empty file: %v", err)
	}
}
