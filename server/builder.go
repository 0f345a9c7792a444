package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/buildkit/client"
	gateway "github.com/moby/buildkit/frontend/gateway/client"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/llb"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Builders gives each build the buildkitd it runs on. Without one
// (Config.Builders nil), every build runs on the server's own BuildKit
// client, which lives as long as the server (the persistent mode).
type Builders interface {
	// Acquire returns the buildkitd the build of req runs on. It may wait
	// for one (a pool whose workers are all busy or down) until ctx ends.
	Acquire(ctx context.Context, req BuilderRequest) (*Builder, error)
}

// BuilderRequest is what a build asks of Builders.
type BuilderRequest struct {
	// BuildID is the build's id.
	BuildID string
	// Key is what keeps builds on one worker of a pool, so that their
	// caches are hot there: the build's git repository.
	Key string
	// Avoid names workers a retry should not go back to.
	Avoid []string
	// Waiting, if set, is told once when Acquire has to wait, and why.
	Waiting func(why string)
}

// Builder is a buildkitd given to one build.
type Builder struct {
	// Client is the connection to it.
	Client BuildKitClient
	// Name is its name in the build's record and events.
	Name string
	// Release gives it back once the build is done with it (after the
	// push, or when the build failed); lost says the build failed because
	// the builder went away. The server calls it once.
	Release func(ctx context.Context, lost bool) error
}

// persistentBuilder is the name of the server's own buildkitd in records.
const persistentBuilder = "buildkitd"

// acquireBuilder is the buildkitd the build b runs on, avoiding the
// builders in avoid, and its release.
func (s *Server) acquireBuilder(ctx context.Context, b *build, avoid []string) (BuildKitClient, string, func(lost bool), error) {
	if s.cfg.Builders == nil {
		return s.bk, persistentBuilder, func(bool) {}, nil
	}
	start := time.Now()
	got, err := s.cfg.Builders.Acquire(ctx, BuilderRequest{BuildID: b.id, Key: b.req.Repo, Avoid: avoid,
		Waiting: func(why string) {
			b.setState(buildv1.BuildState_BUILD_STATE_QUEUED, "waiting for a builder: "+why)
		}})
	if err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
			// The build's own end (timeout, cancel), not the builders'.
			return nil, "", nil, fmt.Errorf("%w (waiting for a builder: %w)", cause, err)
		}
		return nil, "", nil, fmt.Errorf("%w: a builder for this build: %w", errBuildkitUnavailable, err)
	}
	s.cfg.Logger.Info("builder ready", "build", b.id, "builder", got.Name, "after", time.Since(start).Round(time.Millisecond))
	return got.Client, got.Name, func(lost bool) {
		// In the background: the build's result does not wait for its
		// builder's teardown (seconds, to remove an unpacked image). The
		// build's own context may be done (cancelled, timed out): the
		// builder is given back regardless. Close waits for it.
		s.releases.Add(1)
		go func() {
			defer s.releases.Done()
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := got.Release(ctx, lost); err != nil {
				s.cfg.Logger.Warn("releasing the builder", "build", b.id, "builder", got.Name, "err", err)
			}
		}()
	}, nil
}

// Launcher starts ephemeral buildkitds (package buildkitd's Launcher).
type Launcher interface {
	Start(ctx context.Context, name string) (*buildkitd.Instance, error)
}

// EphemeralBuilders gives each build a fresh buildkitd of l: its own empty
// state, thrown away (process, mounts and directory) after the build; only
// the service's stores outlive it. idle builders are kept started ahead,
// each with the service's builder and base images already pulled and its
// Go root copied (llb.WarmDefinition: the service's images, nothing of any
// tenant), so that a build does not wait for that; 0 starts each builder
// when its build needs it.
func EphemeralBuilders(l Launcher, idle int) Builders {
	return &ephemeralBuilders{l: l, idle: max(0, idle), ready: make(chan *readyBuilder, max(0, idle))}
}

type ephemeralBuilders struct {
	l     Launcher
	idle  int
	ready chan *readyBuilder

	mu     sync.Mutex
	cancel context.CancelFunc // of the pool's fillers, once started
	fill   sync.WaitGroup
	seq    atomic.Int64
}

// readyBuilder is a started (and, from the pool, warmed) buildkitd.
type readyBuilder struct {
	inst *buildkitd.Instance
	c    *client.Client
}

func (r *readyBuilder) close(ctx context.Context) error {
	return errors.Join(r.c.Close(), r.inst.Close(ctx))
}

// builderPool is a Builders that keeps builders ready; the server starts
// and stops it.
type builderPool interface {
	startPool(warm func(context.Context, BuildKitClient) error, log *slog.Logger)
	stopPool(ctx context.Context)
}

// launch starts a builder named name.
func (e *ephemeralBuilders) launch(ctx context.Context, name string) (*readyBuilder, error) {
	inst, err := e.l.Start(ctx, name)
	if err != nil {
		return nil, err
	}
	c, err := inst.Client(ctx)
	if err != nil {
		_ = inst.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return &readyBuilder{inst: inst, c: c}, nil
}

// startPool keeps e.idle builders ready, each warmed by warm.
func (e *ephemeralBuilders) startPool(warm func(context.Context, BuildKitClient) error, log *slog.Logger) {
	if e.idle == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	for i := 0; i < e.idle; i++ {
		e.fill.Add(1)
		go func() {
			defer e.fill.Done()
			e.keepReady(ctx, warm, log)
		}()
	}
}

// keepReady starts and warms builders into e.ready until ctx ends: one at
// a time, the next once the last was taken. A failure is logged and tried
// again after a pause; builds meanwhile start builders of their own.
func (e *ephemeralBuilders) keepReady(ctx context.Context, warm func(context.Context, BuildKitClient) error, log *slog.Logger) {
	pause := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		rb, err := e.launch(ctx, fmt.Sprintf("idle-%d", e.seq.Add(1)))
		if err == nil {
			if err = warm(ctx, rb.c); err != nil {
				_ = rb.close(context.WithoutCancel(ctx))
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("an idle builder failed to start; builds start their own", "err", err, "retry_in", pause)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
				}
				pause = min(2*pause, time.Minute)
			}
			continue
		}
		pause = time.Second
		log.Info("idle builder ready", "builder", filepath.Base(rb.inst.Dir()), "after", time.Since(start).Round(time.Millisecond))
		select {
		case e.ready <- rb:
		case <-ctx.Done():
			_ = rb.close(context.WithoutCancel(ctx))
		}
	}
}

// stopPool stops the fillers and closes the idle builders.
func (e *ephemeralBuilders) stopPool(ctx context.Context) {
	e.mu.Lock()
	cancel := e.cancel
	e.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	e.fill.Wait()
	for {
		select {
		case rb := <-e.ready:
			_ = rb.close(ctx)
		default:
			return
		}
	}
}

// Acquire implements Builders: an idle builder if one is ready, else a
// new one. Every build has a builder of its own: Key and Avoid do not
// matter.
func (e *ephemeralBuilders) Acquire(ctx context.Context, req BuilderRequest) (*Builder, error) {
	var rb *readyBuilder
	select {
	case rb = <-e.ready:
	default:
		// The instance's name is short: its socket path must fit a
		// sun_path.
		var err error
		if rb, err = e.launch(ctx, "build-"+req.BuildID[max(0, len(req.BuildID)-10):]); err != nil {
			return nil, err
		}
	}
	return &Builder{Client: rb.c, Name: "ephemeral " + filepath.Base(rb.inst.Dir()),
		Release: func(ctx context.Context, _ bool) error { return rb.close(ctx) }}, nil
}

// warmBuilder readies a new buildkitd for any build: the server's builder
// and base images pulled and the builder's Go root copied, with the
// server's own registry credentials (llb.WarmDefinition; nothing of a
// request or tenant).
func (s *Server) warmBuilder(ctx context.Context, c BuildKitClient) error {
	platform, err := workerPlatform(ctx, c)
	if err != nil {
		return err
	}
	docker, err := buildkitd.LoadDockerConfig(s.cfg.DockerConfigDir)
	if err != nil {
		return err
	}
	attach, err := (&credentials.Build{}).Attachables(docker)
	if err != nil {
		return err
	}
	_, err = c.Build(ctx, client.SolveOpt{Session: attach}, "buildsvc-warm", func(ctx context.Context, gc gateway.Client) (*gateway.Result, error) {
		builder, err := resolveImage(ctx, gc, s.cfg.BuilderImage, platform)
		if err != nil {
			return nil, fmt.Errorf("builder image: %w", err)
		}
		base, err := resolveImage(ctx, gc, s.cfg.BaseImage, platform)
		if err != nil {
			return nil, fmt.Errorf("base image: %w", err)
		}
		def, err := llb.WarmDefinition(ctx, llb.Spec{Builder: builder, Base: base, BuildPlatform: platform, Platform: platform})
		if err != nil {
			return nil, err
		}
		if _, err := gc.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true}); err != nil {
			return nil, err
		}
		return gateway.NewResult(), nil
	}, nil)
	return err
}
