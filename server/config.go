// Package server is the build service: it validates CreateImage requests,
// resolves git references, runs each build as a BuildKit solve that pushes
// the image, and fans every build's event log out to its watchers.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// Defaults for Config fields left empty.
const (
	DefaultBuilderImage  = "docker.io/library/golang:alpine"
	DefaultBaseImage     = "gcr.io/distroless/static-debian12:nonroot"
	DefaultMaxConcurrent = 4
	DefaultResolveTimout = 30 * time.Second
)

// Config is the server's configuration. The zero value of every field but
// BuildKit is usable; New fills in the defaults.
type Config struct {
	// BuildKit is the daemon that runs the builds.
	BuildKit buildkitd.Endpoint
	// BuilderImage has the Go toolchain (golang:alpine or an image made by
	// the offline bootstrap).
	BuilderImage string
	// BaseImage is the runtime image binaries are copied onto, unless a
	// request names another.
	BaseImage string
	// DockerConfigDir holds the config.json whose credentials reach
	// buildkitd for pulls and pushes. Empty means $DOCKER_CONFIG or ~/.docker.
	DockerConfigDir string
	// GoProxy and GoFlags become GOPROXY and GOFLAGS of every go build.
	GoProxy string
	GoFlags string
	// AllowInsecureGit accepts file:// and plain http:// repositories, for
	// local development and tests. Off in production.
	AllowInsecureGit bool
	// MaxConcurrent is how many builds run at once; more wait QUEUED.
	MaxConcurrent int
	// ResolveTimeout bounds resolving a git reference to a SHA.
	ResolveTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if err := c.BuildKit.Validate(); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if c.BuilderImage == "" {
		c.BuilderImage = DefaultBuilderImage
	}
	if c.BaseImage == "" {
		c.BaseImage = DefaultBaseImage
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.MaxConcurrent < 0 {
		return c, errors.New("config: max concurrent builds must be positive")
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = DefaultResolveTimout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for what, ref := range map[string]string{"builder image": c.BuilderImage, "base image": c.BaseImage} {
		if _, err := parseImageRef(ref); err != nil {
			return c, fmt.Errorf("config: %s: %w", what, err)
		}
	}
	return c, nil
}
