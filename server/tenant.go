package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/docker/cli/cli/config/configfile"
	"golang.org/x/time/rate"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var (
	errNoIdentity = errors.New("the call carries no authenticated caller")
	errNotAdmin   = errors.New("only admins may do this")
)

// caller is who a call acts for.
type caller struct {
	// tenant owns the builds the caller starts and is the only one whose
	// builds it sees, unless admin.
	tenant string
	admin  bool
	name   string
}

// callerOf returns who ctx's call acts for. On a server without
// authentication (Config.Authenticated false) every call acts as an admin
// of the empty tenant: one user, who sees everything.
func (s *Server) callerOf(ctx context.Context) (caller, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		if s.cfg.Authenticated {
			return caller{}, errNoIdentity
		}
		return caller{admin: true, name: "anonymous"}, nil
	}
	return caller{tenant: id.Tenant, admin: id.Admin, name: id.Name}, nil
}

// tenantPolicy returns tenant's policy (no limits without Config.Tenants).
func (s *Server) tenantPolicy(tenant string) policy.Tenant { return s.cfg.Tenants.For(tenant) }

// checkPolicy refuses a parsed request of tenant that its policy does not
// allow. It does no I/O.
func checkPolicy(pol policy.Tenant, req *buildv1.CreateImageRequest, r *request) error {
	host, err := repoHost(r.Repo)
	if err != nil {
		return err
	}
	if err := pol.CheckGitHost(host); err != nil {
		return err
	}
	for _, t := range r.Tags {
		if err := pol.CheckImageTag(t); err != nil {
			return err
		}
	}
	if req.GetBaseImage() != "" {
		if err := pol.CheckBaseImage(r.BaseImage); err != nil {
			return err
		}
	}
	if req.GetTimeout() != nil {
		return pol.CheckTimeout(req.GetTimeout().AsDuration())
	}
	return nil
}

// repoHost returns the host of a git URL as host or host:port.
func repoHost(repo string) (string, error) {
	g, err := parseGitRemote(repo)
	if err != nil {
		return "", fieldErr("git_repo", "%v", err)
	}
	return g.host(), nil
}

// withTenantAllow returns cfg with the tenant's wider allow-lists added.
func withTenantAllow(cfg Config, pol policy.Tenant) Config {
	cfg.AllowBuild = cfg.AllowBuild.Add(pol.Allow)
	return cfg
}

// egressAllowance is what the tenant's policy adds to the host policy of
// the resolves of its refs.
func egressAllowance(pol policy.Tenant) egress.Allowance {
	return egress.Allowance{Loopback: pol.AllowLoopback, Private: pol.AllowPrivate, AnyPort: pol.AllowAnyPort, Ports: pol.AllowedPorts}
}

// errTenantLimit is a tenant over one of its quotas.
type errTenantLimit struct{ rule, reason string }

func (e errTenantLimit) Error() string {
	return fmt.Sprintf("the tenant's %s is reached: %s", e.rule, e.reason)
}

// limiter returns tenant's rate limiter, nil without a rate; s.mu is held.
func (s *Server) limiterLocked(tenant string, pol policy.Tenant) *rate.Limiter {
	if pol.RatePerMinute <= 0 {
		return nil
	}
	l := s.limiters[tenant]
	if l == nil {
		burst := pol.Burst
		if burst <= 0 {
			burst = max(1, int(pol.RatePerMinute))
		}
		l = rate.NewLimiter(rate.Limit(pol.RatePerMinute/60), burst)
		s.limiters[tenant] = l
	}
	return l
}

// checkQueuedLocked refuses a new build of a tenant whose queue is full;
// s.mu is held.
func (s *Server) checkQueuedLocked(tenant string, pol policy.Tenant) error {
	if pol.MaxQueued > 0 && s.queue.tenantLen(tenant) >= pol.MaxQueued {
		return errTenantLimit{"max_queued", fmt.Sprintf("%d builds are waiting", pol.MaxQueued)}
	}
	return nil
}

// checkRateLocked refuses a request of a tenant over its rate; s.mu is
// held.
func (s *Server) checkRateLocked(tenant string, pol policy.Tenant) error {
	if l := s.limiterLocked(tenant, pol); l != nil && !l.Allow() {
		return errTenantLimit{"rate_per_minute", fmt.Sprintf("%g builds a minute; try again later", pol.RatePerMinute)}
	}
	return nil
}

// registryConfig loads the docker config whose credentials a build of a
// tenant with pol may use: the server's, one named by the policy, or none.
func (s *Server) registryConfig(pol policy.Tenant) (*configfile.ConfigFile, error) {
	switch name := pol.RegistryCredentials; name {
	case "":
		return buildkitd.LoadDockerConfig(s.cfg.DockerConfigDir)
	case policy.NoCredentials:
		return configfile.New(""), nil
	default:
		dir, ok := s.cfg.RegistryCredentials[name]
		if !ok { // checked when the server starts
			return nil, fmt.Errorf("registry credentials %q are not configured", name)
		}
		return buildkitd.LoadDockerConfig(dir)
	}
}

// sees reports whether c may see a build of tenant.
func (c caller) sees(tenant string) bool { return c.admin || c.tenant == tenant }

// visibleBuild returns the record of build id if c may see it. A build of
// another tenant is history.ErrNotFound, exactly as a build that does not
// exist, so that ids of other tenants' builds tell a caller nothing.
func (s *Server) visibleBuild(ctx context.Context, c caller, id string) (*buildv1.BuildInfo, error) {
	info, err := s.buildInfo(ctx, id)
	if err != nil {
		return nil, err
	}
	if !c.sees(info.GetTenant()) {
		return nil, fmt.Errorf("build %q: %w", id, history.ErrNotFound)
	}
	return info, nil
}
