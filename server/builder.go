package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// Builders gives each build the buildkitd it runs on. Without one
// (Config.Builders nil), every build runs on the server's own BuildKit
// client, which lives as long as the server (the persistent mode).
type Builders interface {
	// Acquire returns the buildkitd of the build id, its name for the
	// build's record, and release, which the server calls once when the
	// build is done with it (after the push, or when the build failed).
	Acquire(ctx context.Context, buildID string) (c BuildKitClient, name string, release func(context.Context) error, err error)
}

// persistentBuilder is the name of the server's own buildkitd in records.
const persistentBuilder = "buildkitd"

// acquireBuilder is the buildkitd the build b runs on, and its release.
func (s *Server) acquireBuilder(ctx context.Context, b *build) (BuildKitClient, string, func(), error) {
	if s.cfg.Builders == nil {
		return s.bk, persistentBuilder, func() {}, nil
	}
	start := time.Now()
	c, name, release, err := s.cfg.Builders.Acquire(ctx, b.id)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: a builder for this build: %w", errBuildkitUnavailable, err)
	}
	s.cfg.Logger.Info("builder ready", "build", b.id, "builder", name, "after", time.Since(start).Round(time.Millisecond))
	return c, name, func() {
		// The build's own context may be done (cancelled, timed out):
		// the builder is thrown away regardless.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := release(ctx); err != nil {
			s.cfg.Logger.Warn("releasing the builder", "build", b.id, "builder", name, "err", err)
		}
	}, nil
}

// Launcher starts ephemeral buildkitds (package buildkitd's Launcher).
type Launcher interface {
	Start(ctx context.Context, name string) (*buildkitd.Instance, error)
}

// EphemeralBuilders gives each build a fresh buildkitd of l: its own empty
// state, started for the build and thrown away (process, mounts and
// directory) after it. Only the service's stores outlive it.
func EphemeralBuilders(l Launcher) Builders { return ephemeralBuilders{l} }

type ephemeralBuilders struct{ l Launcher }

// Acquire implements Builders.
func (e ephemeralBuilders) Acquire(ctx context.Context, buildID string) (BuildKitClient, string, func(context.Context) error, error) {
	// The instance's name is short: its socket path must fit a sun_path.
	name := "build-" + buildID[max(0, len(buildID)-10):]
	inst, err := e.l.Start(ctx, name)
	if err != nil {
		return nil, "", nil, err
	}
	c, err := inst.Client(ctx)
	if err != nil {
		_ = inst.Close(context.WithoutCancel(ctx))
		return nil, "", nil, err
	}
	return c, "ephemeral " + filepath.Base(inst.Dir()), func(ctx context.Context) error {
		return errors.Join(c.Close(), inst.Close(ctx))
	}, nil
}
