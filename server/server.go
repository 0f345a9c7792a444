package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/imageconfig"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var (
	errQueueFull    = errors.New("the build queue is full; try again later")
	errShuttingDown = errors.New("the server is shutting down")
	// Causes a build's context is cancelled with.
	errCancelled = errors.New("the build was cancelled")
	// errBuildkitUnavailable wraps a failure to reach buildkitd at all.
	errBuildkitUnavailable = errors.New("buildkitd unavailable")
	errShutdown            = errors.New("the server stopped while the build ran")
)

// errTimeout is the cause of a build that ran out of time.
type errTimeout struct{ after time.Duration }

func (e errTimeout) Error() string { return fmt.Sprintf("the build timed out after %s", e.after) }

// Server implements the build.v1 Build and Admin services.
type Server struct {
	buildv1.UnimplementedBuildServer
	buildv1.UnimplementedAdminServiceServer

	cfg      Config
	bk       BuildKitClient
	resolver Resolver
	stopping atomic.Bool
	builds   sync.WaitGroup // build goroutines
	persist  sync.WaitGroup // persisters
	releases sync.WaitGroup // builders being thrown away
	// With a shared queue (Config.Shared): its loops run until
	// stopShared, which Close calls; sharedKick asks for a claim now.
	stopShared  context.CancelFunc
	sharedLoops sync.WaitGroup
	sharedKick  chan struct{}

	mu        sync.Mutex
	active    map[string]*build // not yet ended, or ended but not yet fully stored
	inflight  map[string]*build // dedup key -> queued or running build
	queue     *fairQueue        // waiting for a slot, fair across tenants
	running   int
	held      map[string]*heldBuild    // queued by this replica with the request's own credentials
	runningBy map[string]int           // running builds by tenant
	limiters  map[string]*rate.Limiter // by tenant, for tenants with a rate
	modGen    map[string]int64         // generation of the download step, by modulesKey
	rootCAs   []*x509.Certificate      // of Credentials.CABundle, trusted besides the system's
	regRoots  *x509.CertPool           // the system's roots and rootCAs, for registries
	verifying chan struct{}            // one VerifyBuild rebuild at a time
	// builderPin is the builder image pinned to its digest, until
	// builderPinUntil.
	builderPin      string
	builderPinUntil time.Time
	// imageConfigs remembers the builder's and base images' configs.
	imageConfigs *imageconfig.Memo
	// proxyURL is Config.ModuleProxyURL, parsed; nil without a proxy.
	proxyURL *url.URL
}

// New returns a server that runs builds on the buildkitd cfg names. The
// connection is made lazily, so New succeeds while buildkitd is still
// starting. Builds the store holds as queued or running, left by a server
// that stopped without ending them, are marked INTERRUPTED.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:          cfg,
		resolver:     cfg.Resolver,
		active:       map[string]*build{},
		inflight:     map[string]*build{},
		queue:        newFairQueue(),
		runningBy:    map[string]int{},
		limiters:     map[string]*rate.Limiter{},
		modGen:       map[string]int64{},
		imageConfigs: imageconfig.New(),
		held:         map[string]*heldBuild{},
		sharedKick:   make(chan struct{}, 1),
	}
	if cfg.ModuleProxy != nil {
		if s.proxyURL, err = url.Parse(cfg.ModuleProxyURL); err != nil || s.proxyURL.Scheme != "https" || s.proxyURL.Host == "" {
			return nil, fmt.Errorf("config: module proxy URL %q: want https://host:port", cfg.ModuleProxyURL)
		}
	}
	if cfg.Credentials != nil {
		if len(cfg.Credentials.CABundle) > 0 {
			if s.rootCAs, err = egress.RootCAsFromPEM(cfg.Credentials.CABundle); err != nil {
				return nil, fmt.Errorf("CA bundle: %w", err)
			}
		}
	}
	s.verifying = make(chan struct{}, 1)
	if s.regRoots, err = x509.SystemCertPool(); err != nil || s.regRoots == nil {
		s.regRoots = x509.NewCertPool()
	}
	for _, c := range s.rootCAs {
		s.regRoots.AddCert(c)
	}
	// Builds a previous process left running are interrupted; with a
	// shared queue, the replicas do that for one another (by lease).
	if cfg.Shared == nil {
		if err := s.interruptLeftovers(ctx); err != nil {
			return nil, err
		}
	} else {
		// But its own: what a previous process of its name left.
		ids, err := cfg.Shared.Leftovers(ctx)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			s.cfg.Logger.Warn("build left by a previous process of this replica marked interrupted", "build", id)
			s.endStored(ctx, id, buildv1.BuildState_BUILD_STATE_INTERRUPTED, errShutdown)
		}
	}
	_, pooled := cfg.Builders.(*poolBuilders)
	if s.bk = cfg.BuildKitClient; s.bk == nil && !pooled {
		if s.bk, err = buildkitd.Dial(ctx, cfg.BuildKit); err != nil {
			return nil, err
		}
	}
	if p, ok := cfg.Builders.(builderPool); ok {
		p.startPool(s.warmBuilder, s.cfg.Logger.With("component", "builders"))
	}
	if cfg.Shared != nil {
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stopShared = stop
		s.sharedLoops.Add(2)
		go func() { defer s.sharedLoops.Done(); s.runShared(sctx) }()
		go func() { defer s.sharedLoops.Done(); s.renewShared(sctx) }()
	}
	return s, nil
}

// Close stops the server. Queued builds are interrupted at once; running
// builds get until ctx ends to finish, then they are stopped and marked
// INTERRUPTED. Close returns once every build has ended and been stored.
// It does not close the store.
func (s *Server) Close(ctx context.Context) error {
	s.stopping.Store(true)
	if s.stopShared != nil {
		// No more claims; the leases are renewed until the running
		// builds have ended (below), then no more.
		defer func() { s.stopShared(); s.sharedLoops.Wait() }()
	}
	s.mu.Lock()
	queued := s.queue.drain()
	s.mu.Unlock()
	for _, b := range queued {
		s.finishQueued(b, errShutdown)
	}
	done := make(chan struct{})
	go func() { s.builds.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for _, b := range s.active {
			b.requestStop(errShutdown)
		}
		s.mu.Unlock()
		<-done
	}
	s.persist.Wait()
	if p, ok := s.cfg.Builders.(builderPool); ok {
		p.stopPool(ctx)
	}
	s.releases.Wait()
	if s.bk == nil {
		return nil // the pool's connections are its own
	}
	return s.bk.Close()
}

// CreateImage implements buildv1.BuildServer.
func (s *Server) CreateImage(req *buildv1.CreateImageRequest, stream buildv1.Build_CreateImageServer) error {
	a, err := s.start(stream.Context(), req)
	if err != nil {
		return s.refused(err)
	}
	// A build that ended without an image ends the call with its error too,
	// after the BuildError event, with that event as a detail.
	var end buildEnd
	if err := s.streamLog(stream.Context(), a, 0, end.watch(stream.Send)); err != nil {
		return toStatus(err)
	}
	return end.status(a.id)
}

// refused counts a request that start refused and returns its status.
func (s *Server) refused(err error) error {
	st := refusalStatus(err)
	if s.cfg.Observer != nil {
		s.cfg.Observer.Refused(status.Code(st))
	}
	return st
}

// StartBuild implements buildv1.BuildServer.
func (s *Server) StartBuild(ctx context.Context, req *buildv1.StartBuildRequest) (*buildv1.StartBuildResponse, error) {
	if req.GetRequest() == nil {
		return nil, s.refused(fieldErr("request", "is required"))
	}
	a, err := s.start(ctx, req.GetRequest())
	if err != nil {
		return nil, s.refused(err)
	}
	return &buildv1.StartBuildResponse{BuildId: a.id, Name: resourceName(a.id), Joined: a.joined, Existing: a.existing}, nil
}

// WatchBuild implements buildv1.BuildServer.
func (s *Server) WatchBuild(req *buildv1.WatchBuildRequest, stream buildv1.Build_WatchBuildServer) error {
	ctx := stream.Context()
	id := buildIDOf(req.GetBuildId())
	if id == "" {
		return toStatus(fieldErr("build_id", "is required"))
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return toStatus(err)
	}
	if _, err := s.visibleBuild(ctx, c, id); err != nil {
		return toStatus(err)
	}
	return toStatus(s.streamLog(ctx, &admission{id: id, b: s.activeBuild(id)}, req.GetFromSeq(), stream.Send))
}

// streamLog sends a's events after seq after: an active build's from
// memory, following it until it ends; an ended one's from the store.
func (s *Server) streamLog(ctx context.Context, a *admission, after uint64, send func(*buildv1.BuildEvent) error) error {
	id := a.id
	for {
		b := a.b
		if b == nil {
			b = s.activeBuild(id)
		}
		if b != nil && after >= b.log.base {
			// An active build has its events from its log's base in
			// memory (all of them, unless it was queued by another
			// replica).
			return b.log.follow(ctx, after, send)
		}
		evs, err := s.cfg.Store.Events(ctx, id, after, 1000)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := send(e); err != nil {
				return err
			}
			after = e.GetSeq()
			if e.GetResult() != nil || e.GetError() != nil {
				return nil // the build's last event
			}
		}
		if len(evs) > 0 || b != nil {
			continue
		}
		// Stored to its end, or running on another replica: then wait
		// for more.
		if done, err := s.storedEnded(ctx, id); err != nil || done {
			if done {
				// Events stored between the last read and the end.
				if evs, err := s.cfg.Store.Events(ctx, id, after, 1000); err == nil && len(evs) > 0 {
					continue
				}
			}
			return err
		}
		if err := s.waitStored(ctx, id); err != nil {
			return err
		}
	}
}

// GetBuild implements buildv1.BuildServer.
func (s *Server) GetBuild(ctx context.Context, req *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	info, err := s.callersBuild(ctx, req.GetBuildId())
	return info, toStatus(err)
}

// callersBuild is the build named by raw (an id or builds/{id}) if the
// caller may see it.
func (s *Server) callersBuild(ctx context.Context, raw string) (*buildv1.BuildInfo, error) {
	id := buildIDOf(raw)
	if id == "" {
		return nil, fieldErr("build_id", "is required")
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, err
	}
	return s.visibleBuild(ctx, c, id)
}

func (s *Server) buildInfo(ctx context.Context, id string) (*buildv1.BuildInfo, error) {
	if b := s.activeBuild(id); b != nil {
		return b.info(), nil
	}
	return s.cfg.Store.GetBuild(ctx, id)
}

// CancelBuild implements buildv1.BuildServer. It waits a few seconds for
// the build to end, so the answer usually shows it CANCELLED.
func (s *Server) CancelBuild(ctx context.Context, req *buildv1.CancelBuildRequest) (*buildv1.CancelBuildResponse, error) {
	info, err := s.cancelBuild(ctx, req)
	if err != nil {
		return nil, err
	}
	return &buildv1.CancelBuildResponse{Build: info}, nil
}

func (s *Server) cancelBuild(ctx context.Context, req *buildv1.CancelBuildRequest) (*buildv1.BuildInfo, error) {
	id := buildIDOf(req.GetBuildId())
	if id == "" {
		return nil, toStatus(fieldErr("build_id", "is required"))
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.visibleBuild(ctx, c, id); err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	b := s.active[id]
	queued := b != nil && s.dequeue(b)
	s.mu.Unlock()
	if b == nil {
		if s.cfg.Shared != nil {
			s.cfg.Logger.Info("cancelling build", "build", id, "caller", c.name, "queue", "shared")
			info, err := s.cancelShared(ctx, id)
			return info, toStatus(err)
		}
		info, err := s.cfg.Store.GetBuild(ctx, id)
		return info, toStatus(err)
	}
	s.cfg.Logger.Info("cancelling build", "build", b.id, "caller", c.name)
	if queued {
		s.finishQueued(b, errCancelled)
	} else {
		b.requestStop(errCancelled)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = b.log.follow(wctx, 0, func(*buildv1.BuildEvent) error { return nil })
	return b.info(), nil
}

func (s *Server) activeBuild(id string) *build {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id]
}

// egressAllow is the server-wide allowance of the host policy of its own
// connections: its resolver's.
func (s *Server) egressAllow() egress.Allowance {
	if r, ok := s.resolver.(RemoteResolver); ok {
		return r.Allow
	}
	return egress.Allowance{}
}

// dedupKey is the same for requests of one tenant that would build the
// same image; requests of different tenants never share a build.
func dedupKey(tenant string, r *request, sha string) string {
	p := r.proto()
	p.Timeout = nil  // how long it may take does not change what it makes
	p.RequestId = "" // nor which retry key the caller chose
	p.GitCommit = sha
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s\n", len(tenant), tenant)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// start validates req, resolves its commit, and queues a new build or
// joins an identical one that is queued or running.
func (s *Server) start(ctx context.Context, req *buildv1.CreateImageRequest) (*admission, error) {
	if s.stopping.Load() {
		return nil, errShuttingDown
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, err
	}
	pol := s.tenantPolicy(c.tenant)
	r, err := parseRequest(req, withTenantAllow(s.cfg, pol))
	if err != nil {
		return nil, err
	}
	if err := checkPolicy(pol, req, r); err != nil {
		return nil, err
	}
	reqKey := history.RequestKey{Tenant: c.tenant, RequestID: r.RequestID}
	var fingerprint string
	if r.RequestID != "" {
		// A retry returns the build its request_id started, running or
		// ended, before anything else is asked of anyone.
		fingerprint = requestFingerprint(req)
		if a, err := s.existingRequest(ctx, reqKey, fingerprint); a != nil || err != nil {
			return a, err
		}
	}
	s.mu.Lock()
	if err = s.checkQueuedLocked(c.tenant, pol); err == nil {
		err = s.checkRateLocked(c.tenant, pol)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if s.queueFull() {
		return nil, errQueueFull
	}
	dockerCfg, err := s.registryConfig(pol)
	if err != nil {
		return nil, err
	}
	creds, err := s.buildCredentials(c.tenant, r)
	if err != nil {
		return nil, err
	}
	if err := s.pinImages(ctx, r, egressAllowance(pol), dockerCfg, creds); err != nil {
		return nil, err
	}
	red := newRedactor(append(buildkitd.Secrets(dockerCfg), creds.Values()...))
	began := time.Now()
	rctx, cancel := context.WithTimeout(withResolveTenant(ctx, c.tenant, egressAllowance(pol)), s.cfg.ResolveTimeout)
	sha, err := s.resolver.Resolve(rctx, r.Repo, r.Ref, s.resolveAuth(creds))
	cancel()
	if err != nil {
		err = resolveFailed(err, creds)
		s.cfg.Logger.Info("resolve failed", "repo", r.Repo, "ref", r.Ref, "err", red.string(err.Error()), "cause", red.string(resolveCause(err)))
		return nil, err
	}
	key := dedupKey(c.tenant, r, sha)
	if r.creds.any() {
		// A build with the request's own credentials is never shared:
		// each caller's credentials are used for its own pull and push.
		key += "/" + newBuildID(time.Now())
	}

	s.mu.Lock()
	if r.RequestID != "" {
		if b := s.activeRequestLocked(reqKey); b != nil {
			// The same request_id came in meanwhile and started it.
			s.mu.Unlock()
			return sameRequest(reqKey, b.id, b.fingerprint, fingerprint, b)
		}
	}
	if s.cfg.Shared != nil {
		s.mu.Unlock()
		now := time.Now()
		b := &build{id: newBuildID(now), tenant: c.tenant, registry: dockerCfg, creds: creds, allow: s.egressAllow().Add(egressAllowance(pol)),
			req: r, key: key, timeout: r.Timeout, commit: sha, created: now,
			state: buildv1.BuildState_BUILD_STATE_RESOLVING, stop: make(chan struct{}), requestKey: reqKey, fingerprint: fingerprint}
		b.log = newEventLog(b.id, red, s.cfg.LogCap)
		b.log.append(resolvedEvent(r, sha, began))
		a, err := s.admitShared(ctx, b, tenantPolicyLimits{maxQueued: pol.MaxQueued})
		if err != nil {
			return nil, err
		}
		s.claimRequest(ctx, reqKey, fingerprint, a.id)
		if !a.joined {
			s.cfg.Logger.Info("build accepted", "build", b.id, "tenant", c.tenant, "caller", c.name, "repo", r.Repo, "ref", r.Ref, "commit", sha, "tag", r.Tag, "package", r.Package, "queue", "shared")
			s.dispatch()
		}
		return a, nil
	}
	if b := s.inflight[key]; b != nil {
		b.mu.Lock()
		b.joined++
		b.mu.Unlock()
		s.mu.Unlock()
		s.cfg.Logger.Info("request joined an identical build", "build", b.id)
		s.cfg.Observer.Joined(b.id)
		s.claimRequest(ctx, reqKey, fingerprint, b.id)
		return &admission{id: b.id, b: b, joined: true}, nil
	}
	if s.queueFullLocked() {
		s.mu.Unlock()
		return nil, errQueueFull
	}
	if err := s.checkQueuedLocked(c.tenant, pol); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	now := time.Now()
	b := &build{id: newBuildID(now), tenant: c.tenant, registry: dockerCfg, creds: creds, allow: s.egressAllow().Add(egressAllowance(pol)),
		req: r, key: key, timeout: r.Timeout, commit: sha, created: now,
		state: buildv1.BuildState_BUILD_STATE_RESOLVING, stop: make(chan struct{}), requestKey: reqKey, fingerprint: fingerprint}
	b.log = newEventLog(b.id, red, s.cfg.LogCap)
	// Its first events are in the log before anyone can see the build, so
	// nothing (a dispatch that starts it) can come before them. Resolving
	// happened before the build was recorded; its event carries the time it
	// began, so the phase has its real length.
	b.log.append(resolvedEvent(r, sha, began))
	s.queue.push(b)
	b.queuePos = int32(slices.Index(s.queue.order(), b))
	b.setState(buildv1.BuildState_BUILD_STATE_QUEUED, fmt.Sprintf("queued (position %d)", b.queuePos))
	s.active[b.id] = b
	s.inflight[key] = b
	s.mu.Unlock()

	// The record is stored before the persister starts, so ListBuilds shows
	// the build at once and no older record can overwrite a newer one.
	if err := s.cfg.Store.PutBuild(ctx, b.info()); err != nil {
		s.cfg.Logger.Error("store build", "build", b.id, "err", err)
	}
	s.claimRequest(ctx, reqKey, fingerprint, b.id)
	s.persist.Add(1)
	go s.persistLog(b)
	s.cfg.Logger.Info("build accepted", "build", b.id, "tenant", c.tenant, "caller", c.name, "repo", r.Repo, "ref", r.Ref, "commit", sha, "tag", r.Tag, "package", r.Package)
	s.dispatch()
	return &admission{id: b.id, b: b}, nil
}

// resolvedEvent is a build's first event: its ref resolved to sha, in the
// time since began.
func resolvedEvent(r *request, sha string, began time.Time) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Time: timestamp(began), Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{
		State:   buildv1.BuildState_BUILD_STATE_RESOLVING,
		Message: fmt.Sprintf("resolved %s to %s in %s", r.Ref, sha, time.Since(began).Round(time.Millisecond)),
		Commit:  sha,
	}}}
}

func (s *Server) queueFull() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueFullLocked()
}

func (s *Server) queueFullLocked() bool {
	return s.running >= s.cfg.MaxConcurrent && s.queue.len() >= s.cfg.QueueSize
}

// mayStartLocked reports whether tenant may start another build now (its
// limit on running builds); s.mu is held.
func (s *Server) mayStartLocked(tenant string) bool {
	limit := s.tenantPolicy(tenant).MaxRunning
	return limit <= 0 || s.runningBy[tenant] < limit
}

// dispatch starts queued builds while slots are free, and tells the ones
// still waiting their new positions.
func (s *Server) dispatch() {
	if s.cfg.Shared != nil {
		select {
		case s.sharedKick <- struct{}{}:
		default:
		}
		return
	}
	s.mu.Lock()
	var start []*build
	for s.running < s.cfg.MaxConcurrent {
		b := s.queue.pop(s.mayStartLocked)
		if b == nil {
			break
		}
		start = append(start, b)
		s.running++
		s.runningBy[b.tenant]++
	}
	waiting := s.queue.order()
	s.mu.Unlock()
	for _, b := range start {
		s.builds.Add(1)
		go s.run(b)
	}
	for i, b := range waiting {
		b.setQueuePosition(i)
	}
}
