package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/sharedqueue"
)

// SharedQueue is the build queue that server replicas share
// (*sharedqueue.Queue, in the PostgreSQL database that is also their
// history). With one (Config.Shared), a replica queues the builds it
// accepts in it, with their record and first events in the store, and
// runs the ones it claims, rebuilt from their stored record: the queue's
// limit, dedup and the running limits hold across the replicas, and a
// build of any replica is watched, listed and cancelled on any.
type SharedQueue interface {
	Replica() string
	Lease() time.Duration
	Enqueue(ctx context.Context, e sharedqueue.Entry, lim sharedqueue.AdmitLimits) (joined string, err error)
	Ready(ctx context.Context, id string) error
	Claim(ctx context.Context, n int, lim sharedqueue.ClaimLimits) ([]string, error)
	Done(ctx context.Context, id string) error
	Cancel(ctx context.Context, id string) (sharedqueue.Where, error)
	Renew(ctx context.Context) (cancel []string, err error)
	Expired(ctx context.Context) ([]string, error)
	Leftovers(ctx context.Context) ([]string, error)
	Counts(ctx context.Context) (queued, running int, err error)
	Wake() <-chan struct{}
	Cancels() <-chan string
	EventsChanged(id string) (<-chan struct{}, func())
}

var _ SharedQueue = (*sharedqueue.Queue)(nil)

// heldBuild is what a replica keeps of a build it queued with the
// request's own credentials, which are never stored: only it may run it.
type heldBuild struct {
	req   *request
	creds *credentials.Build
}

// admitShared queues the build of an accepted request in the shared queue,
// or joins the identical build some replica queued or runs.
func (s *Server) admitShared(ctx context.Context, b *build, pol tenantPolicyLimits) (*admission, error) {
	q := s.cfg.Shared
	owned := b.req.creds.any()
	joined, err := q.Enqueue(ctx, sharedqueue.Entry{BuildID: b.id, Tenant: b.tenant, DedupKey: b.key, Owned: owned},
		sharedqueue.AdmitLimits{QueueSize: s.cfg.QueueSize, MaxConcurrent: s.cfg.MaxConcurrent, TenantMaxQueued: pol.maxQueued})
	switch {
	case errors.Is(err, sharedqueue.ErrQueueFull):
		return nil, errQueueFull
	case errors.Is(err, sharedqueue.ErrTenantQueued):
		return nil, errTenantLimit{"max_queued", fmt.Sprintf("%d builds are waiting", pol.maxQueued)}
	case err != nil:
		return nil, errHistoryWrite{fmt.Errorf("the shared queue: %w", err)}
	case joined != "":
		s.cfg.Logger.Info("request joined an identical build", "build", joined)
		s.cfg.Observer.Joined(joined)
		return &admission{id: joined, joined: true}, nil
	}
	// The record and the first events are stored before the build can be
	// claimed: the replica that claims it continues its log from there.
	b.setState(buildv1.BuildState_BUILD_STATE_QUEUED, "queued")
	evs, _, _ := b.log.since(0)
	err = s.cfg.Store.PutBuild(ctx, b.info())
	if err == nil {
		err = s.cfg.Store.AppendEvents(ctx, b.id, evs)
	}
	if err == nil && owned {
		s.mu.Lock()
		s.held[b.id] = &heldBuild{req: b.req, creds: b.creds}
		s.mu.Unlock()
	}
	if err == nil {
		err = q.Ready(ctx, b.id)
	}
	if err != nil {
		_ = q.Done(context.WithoutCancel(ctx), b.id)
		s.mu.Lock()
		delete(s.held, b.id)
		s.mu.Unlock()
		return nil, errHistoryWrite{fmt.Errorf("queue the build: %w", err)}
	}
	for _, e := range evs {
		s.cfg.Observer.Event(e)
	}
	return &admission{id: b.id}, nil
}

// tenantPolicyLimits is what of a tenant's policy the shared queue
// checks.
type tenantPolicyLimits struct{ maxQueued int }

// runShared claims queued builds while this replica has free slots, until
// ctx ends: at once when the queue says it changed, and every second
// (another replica's slot may free up without a word reaching this one).
func (s *Server) runShared(ctx context.Context) {
	q := s.cfg.Shared
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.claimShared(ctx)
		select {
		case <-ctx.Done():
			return
		case <-q.Wake():
		case <-s.sharedKick:
		case <-tick.C:
		}
	}
}

// claimShared claims as many builds as this replica has free slots and
// starts them.
func (s *Server) claimShared(ctx context.Context) {
	if s.stopping.Load() {
		return
	}
	s.mu.Lock()
	free := s.cfg.MaxConcurrent - s.running
	s.mu.Unlock()
	if free <= 0 {
		return
	}
	ids, err := s.cfg.Shared.Claim(ctx, free, sharedqueue.ClaimLimits{MaxConcurrent: s.cfg.MaxConcurrent,
		TenantMaxRunning: func(tenant string) int { return s.tenantPolicy(tenant).MaxRunning }})
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Error("claim queued builds", "err", err)
		}
		return
	}
	for _, id := range ids {
		b, err := s.claimedBuild(ctx, id)
		if err != nil {
			// It cannot run here, nor anywhere: it ends with the reason.
			s.cfg.Logger.Error("a claimed build cannot run", "build", id, "err", err)
			s.endStored(ctx, id, buildv1.BuildState_BUILD_STATE_FAILED, err)
			_ = s.cfg.Shared.Done(ctx, id)
			continue
		}
		s.mu.Lock()
		s.active[b.id] = b
		s.running++
		s.runningBy[b.tenant]++
		s.mu.Unlock()
		s.cfg.Logger.Info("claimed a queued build", "build", id, "replica", s.cfg.Shared.Replica())
		s.persist.Add(1)
		go s.persistLog(b)
		s.builds.Add(1)
		go s.run(b)
	}
}

// claimedBuild rebuilds a claimed build from its stored record: its
// request, the server's credentials for its tenant (or, for a build this
// replica queued with the request's own, those it kept), and a log that
// continues the stored one.
func (s *Server) claimedBuild(ctx context.Context, id string) (*build, error) {
	info, err := s.cfg.Store.GetBuild(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read its record: %w", err)
	}
	tenant := info.GetTenant()
	pol := s.tenantPolicy(tenant)
	s.mu.Lock()
	held := s.held[id]
	delete(s.held, id)
	s.mu.Unlock()
	var r *request
	var creds *credentials.Build
	if held != nil {
		r, creds = held.req, held.creds
	} else {
		if r, err = parseRequest(info.GetRequest(), withTenantAllow(s.cfg, pol)); err != nil {
			return nil, fmt.Errorf("its stored request: %w", err)
		}
		if creds, err = s.buildCredentials(tenant, r); err != nil {
			return nil, err
		}
	}
	dockerCfg, err := s.registryConfig(pol)
	if err != nil {
		return nil, err
	}
	created := time.Now()
	if info.GetCreateTime() != nil {
		created = info.GetCreateTime().AsTime()
	}
	b := &build{id: id, tenant: tenant, registry: dockerCfg, creds: creds, allow: s.egressAllow().Add(egressAllowance(pol)),
		req: r, key: "shared/" + id, timeout: r.Timeout, commit: info.GetCommit(), created: created,
		state: buildv1.BuildState_BUILD_STATE_QUEUED, stop: make(chan struct{})}
	b.log = newEventLog(id, newRedactor(append(buildkitd.Secrets(dockerCfg), creds.Values()...)), s.cfg.LogCap)
	b.log.base = info.GetLastSeq()
	return b, nil
}

// renewShared renews this replica's leases, stops the builds some replica
// asked to cancel, and ends the builds of replicas that are gone, until
// ctx ends.
func (s *Server) renewShared(ctx context.Context) {
	q := s.cfg.Shared
	every := q.Lease() / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-q.Cancels():
			s.cancelLocal(id)
			continue
		case <-tick.C:
		}
		cancel, err := q.Renew(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.Error("renew the shared queue's leases", "err", err)
			}
			continue
		}
		for _, id := range cancel {
			s.cancelLocal(id)
		}
		gone, err := q.Expired(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.Error("hand back a gone replica's builds", "err", err)
			}
			continue
		}
		for _, id := range gone {
			s.cfg.Logger.Warn("build of a replica that is gone marked interrupted", "build", id)
			s.endStored(ctx, id, buildv1.BuildState_BUILD_STATE_INTERRUPTED, errReplicaGone)
		}
	}
}

// errReplicaGone ends the builds of a replica whose lease ran out.
var errReplicaGone = fmt.Errorf("%w: the server replica that ran or held the build stopped answering (its lease ran out)", errShutdown)

// cancelLocal stops build id if this replica runs it.
func (s *Server) cancelLocal(id string) {
	if b := s.activeBuild(id); b != nil {
		s.cfg.Logger.Info("cancelling build on another replica's request", "build", id)
		b.requestStop(errCancelled)
	}
}

// endStored ends a stored build that no replica runs: its log gets the
// end's state change and error, and its record the end.
func (s *Server) endStored(ctx context.Context, id string, state buildv1.BuildState, cause error) {
	info, err := s.cfg.Store.GetBuild(ctx, id)
	if err != nil {
		s.cfg.Logger.Error("end a stored build", "build", id, "err", err)
		return
	}
	if ended(info.GetState()) {
		return
	}
	if err := s.endRecord(ctx, info, state, cause); err != nil {
		s.cfg.Logger.Error("end a stored build", "build", id, "err", err)
	}
}

// cancelShared cancels a build this replica does not run: a queued one
// ends here and now, a running one is stopped by its replica.
func (s *Server) cancelShared(ctx context.Context, id string) (*buildv1.BuildInfo, error) {
	where, err := s.cfg.Shared.Cancel(ctx, id)
	if err != nil {
		return nil, err
	}
	switch where {
	case sharedqueue.Queued:
		s.mu.Lock()
		delete(s.held, id)
		s.mu.Unlock()
		s.endStored(ctx, id, buildv1.BuildState_BUILD_STATE_CANCELLED, errCancelled)
	case sharedqueue.Running:
		// Its replica ends it; wait a few seconds for that, as a cancel
		// of a local build does.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for {
			info, err := s.cfg.Store.GetBuild(wctx, id)
			if err == nil && ended(info.GetState()) {
				return info, nil
			}
			if err := s.waitStored(wctx, id); err != nil {
				break
			}
		}
	}
	return s.cfg.Store.GetBuild(ctx, id)
}

// waitStored waits until build id's stored log may have grown: the shared
// queue's notification, or a short while.
func (s *Server) waitStored(ctx context.Context, id string) error {
	var changed <-chan struct{}
	if s.cfg.Shared != nil {
		ch, stop := s.cfg.Shared.EventsChanged(id)
		defer stop()
		changed = ch
	}
	select {
	case <-changed:
		return nil
	case <-time.After(500 * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sharedDone takes an ended build out of the shared queue once its log is
// stored to the end.
func (s *Server) sharedDone(b *build) {
	if s.cfg.Shared == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Shared.Done(ctx, b.id); err != nil {
		// Its lease runs out and another replica finds it ended.
		s.cfg.Logger.Error("take an ended build out of the shared queue", "build", b.id, "err", err)
	}
}

// storedEnded reports whether build id's stored record has ended.
func (s *Server) storedEnded(ctx context.Context, id string) (bool, error) {
	info, err := s.cfg.Store.GetBuild(ctx, id)
	if errors.Is(err, history.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return ended(info.GetState()), nil
}
