package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

var errBuildNotFound = errors.New("no build with that id")

// Server implements the build.v1 Build service.
type Server struct {
	buildv1.UnimplementedBuildServer

	cfg      Config
	bk       *client.Client
	resolver Resolver
	slots    chan struct{}
	stopping atomic.Bool
	running  sync.WaitGroup

	mu     sync.Mutex
	builds map[string]*build
}

// New returns a server that runs builds on the buildkitd cfg names. The
// connection is made lazily, so New succeeds while buildkitd is still
// starting.
func New(ctx context.Context, cfg Config, opts ...Option) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		resolver: RemoteResolver{},
		slots:    make(chan struct{}, cfg.MaxConcurrent),
		builds:   map[string]*build{},
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	if s.bk, err = buildkitd.Dial(ctx, cfg.BuildKit); err != nil {
		return nil, err
	}
	return s, nil
}

// Option changes how New builds a Server.
type Option func(*Server) error

// WithResolver replaces the git reference resolver (by default, a remote
// ref listing with go-git).
func WithResolver(r Resolver) Option {
	return func(s *Server) error {
		if r == nil {
			return errors.New("nil resolver")
		}
		s.resolver = r
		return nil
	}
}

// Close stops the server: running builds get until ctx ends to finish, then
// they are stopped and marked INTERRUPTED. Close returns once every build
// has ended.
func (s *Server) Close(ctx context.Context) error {
	s.stopping.Store(true)
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for _, b := range s.builds {
			if b.cancel != nil {
				b.cancel()
			}
		}
		s.mu.Unlock()
		<-done
	}
	return s.bk.Close()
}

// CreateImage implements buildv1.BuildServer.
func (s *Server) CreateImage(req *buildv1.CreateImageRequest, stream buildv1.Build_CreateImageServer) error {
	ctx := stream.Context()
	b, err := s.start(ctx, req)
	if b == nil {
		return toStatus(err)
	}
	if ferr := b.log.follow(ctx, 0, stream.Send); ferr != nil {
		return toStatus(ferr)
	}
	// A request that could not start (its commit does not resolve) ends
	// with that error's status; a build that ran ends OK, its outcome being
	// the last event.
	return toStatus(err)
}

// GetBuild implements buildv1.BuildServer.
func (s *Server) GetBuild(ctx context.Context, req *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	if req.GetBuildId() == "" {
		return nil, toStatus(fieldErr("build_id", "is required"))
	}
	s.mu.Lock()
	b := s.builds[req.GetBuildId()]
	s.mu.Unlock()
	if b == nil {
		return nil, toStatus(fmt.Errorf("build %q: %w", req.GetBuildId(), errBuildNotFound))
	}
	return b.info(), nil
}

// start validates req, records the build, resolves its commit and queues
// it. A request that is not valid returns no build. A build whose commit
// does not resolve is returned ended, with the error.
func (s *Server) start(ctx context.Context, req *buildv1.CreateImageRequest) (*build, error) {
	if s.stopping.Load() {
		return nil, errors.New("server is shutting down")
	}
	r, err := parseRequest(req, s.cfg.AllowInsecureGit, s.cfg.BaseImage)
	if err != nil {
		return nil, err
	}
	dockerCfg, err := buildkitd.LoadDockerConfig(s.cfg.DockerConfigDir)
	if err != nil {
		return nil, err
	}
	red := redactor{secrets: buildkitd.Secrets(dockerCfg)}
	b := newBuild(r, red.event, time.Now())
	// The build outlives the call that started it: a client that goes away
	// does not cancel it.
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = bcancel
	s.mu.Lock()
	s.builds[b.id] = b
	s.mu.Unlock()
	log := s.cfg.Logger.With("build", b.id)
	log.Info("build accepted", "repo", r.Repo, "ref", r.Ref, "tag", r.Tag, "package", r.Package)

	b.setState(buildv1.BuildState_BUILD_STATE_RESOLVING, "resolving "+r.Ref)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ResolveTimeout)
	sha, err := s.resolver.Resolve(rctx, r.Repo, r.Ref)
	cancel()
	if err != nil {
		err = fmt.Errorf("git_commit: %w", err)
		log.Warn("resolve failed", "err", err)
		b.fail(buildv1.BuildState_BUILD_STATE_FAILED, buildError(err))
		bcancel()
		return b, err
	}
	b.setCommit(sha)
	b.setState(buildv1.BuildState_BUILD_STATE_QUEUED, fmt.Sprintf("resolved %s to %s", r.Ref, sha))

	s.running.Add(1)
	go func() {
		defer s.running.Done()
		defer bcancel()
		s.run(bctx, b, sha, log)
	}()
	return b, nil
}
