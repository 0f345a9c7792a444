package server

import (
	"cmp"
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/workers"
)

// GetStatus implements buildv1.AdminServiceServer: the queue, the running
// builds and the workers, from what the server keeps.
func (s *Server) GetStatus(ctx context.Context, _ *buildv1.GetStatusRequest) (*buildv1.GetStatusResponse, error) {
	if c, err := s.callerOf(ctx); err != nil || !c.admin {
		return nil, toStatus(cmp.Or(err, errNotAdmin))
	}
	s.mu.Lock()
	resp := &buildv1.GetStatusResponse{
		Queued:        int32(s.queue.len()),
		Running:       int32(s.running),
		RunningHere:   int32(s.running),
		MaxConcurrent: int32(s.cfg.MaxConcurrent),
	}
	s.mu.Unlock()
	if s.cfg.Shared != nil {
		queued, running, err := s.cfg.Shared.Counts(ctx)
		if err != nil {
			return nil, toStatus(errHistoryRead{err})
		}
		resp.Queued, resp.Running, resp.Replica = int32(queued), int32(running), s.cfg.Shared.Replica()
	}
	if p, ok := s.cfg.Builders.(interface{ status() []workers.Status }); ok {
		for _, w := range p.status() {
			ws := &buildv1.WorkerStatus{Name: w.Name, Healthy: w.Healthy, Running: int32(w.Running), Builds: w.Builds,
				DiskBytes: w.DiskBytes, Error: w.Error}
			if !w.CheckedAt.IsZero() {
				ws.CheckedTime = timestamppb.New(w.CheckedAt)
			}
			resp.Workers = append(resp.Workers, ws)
		}
	}
	return resp, nil
}
