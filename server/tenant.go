package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/history"
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
