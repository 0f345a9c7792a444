package server

import (
	"context"
	"fmt"
	"time"
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
