package server

import (
	"context"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ListBuilds implements buildv1.BuildServer.
func (s *Server) ListBuilds(ctx context.Context, req *buildv1.ListBuildsRequest) (*buildv1.ListBuildsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, toStatus(fieldErr("page_size", "must not be negative"))
	case size == 0:
		size = 50
	case size > 1000:
		size = 1000
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	f := history.Filter{States: req.GetStates(), Repo: req.GetGitRepo(), Before: req.GetPageToken(), Limit: size,
		Tenant: c.tenant}
	if c.admin {
		f.Tenant, f.AnyTenant = req.GetTenant(), req.GetTenant() == ""
	}
	builds, more, err := s.cfg.Store.List(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &buildv1.ListBuildsResponse{Builds: builds}
	for i, b := range builds {
		// The stored record of an active build may lag its last event.
		if a := s.activeBuild(b.GetBuildId()); a != nil {
			resp.Builds[i] = a.info()
		}
	}
	if more && len(builds) > 0 {
		resp.NextPageToken = builds[len(builds)-1].GetBuildId()
	}
	return resp, nil
}
