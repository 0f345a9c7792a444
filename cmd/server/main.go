// Command buildsvc-server serves the build.v1 Build API: it turns git
// commits of Go programs into images, built and pushed by a buildkitd.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "buildsvc-server:", err)
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

func envs(name string) []string { return []string{"BUILDSVC_" + name} }

func newApp() *cli.App {
	return &cli.App{
		Name:  "buildsvc-server",
		Usage: "serve the build.v1 Build API on top of a buildkitd",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:17070", EnvVars: envs("LISTEN"), Usage: "gRPC listen address"},
			&cli.StringFlag{Name: "buildkit-addr", Required: true, EnvVars: envs("BUILDKIT_ADDR"), Usage: "buildkitd address, unix:///path or tcp://host:port"},
			&cli.StringFlag{Name: "buildkit-ca", EnvVars: envs("BUILDKIT_CA"), Usage: "CA certificate of buildkitd (tcp with TLS)"},
			&cli.StringFlag{Name: "buildkit-cert", EnvVars: envs("BUILDKIT_CERT"), Usage: "client certificate for buildkitd mTLS"},
			&cli.StringFlag{Name: "buildkit-key", EnvVars: envs("BUILDKIT_KEY"), Usage: "client key for buildkitd mTLS"},
			&cli.StringFlag{Name: "buildkit-server-name", EnvVars: envs("BUILDKIT_SERVER_NAME"), Usage: "name to check in buildkitd's certificate"},
			&cli.StringFlag{Name: "builder-image", Value: server.DefaultBuilderImage, EnvVars: envs("BUILDER_IMAGE"), Usage: "image with the Go toolchain"},
			&cli.StringFlag{Name: "base-image", Value: server.DefaultBaseImage, EnvVars: envs("BASE_IMAGE"), Usage: "default runtime base image"},
			&cli.StringFlag{Name: "docker-config", EnvVars: envs("DOCKER_CONFIG"), Usage: "directory of the docker config.json with registry credentials (default $DOCKER_CONFIG or ~/.docker)"},
			&cli.StringFlag{Name: "goproxy", EnvVars: envs("GOPROXY"), Usage: "GOPROXY for every build"},
			&cli.StringFlag{Name: "goflags", EnvVars: envs("GOFLAGS"), Usage: "GOFLAGS for every build"},
			&cli.BoolFlag{Name: "allow-insecure-git", EnvVars: envs("ALLOW_INSECURE_GIT"), Usage: "accept file:// and plain http:// repositories (development only)"},
			&cli.IntFlag{Name: "max-concurrent-builds", Value: server.DefaultMaxConcurrent, EnvVars: envs("MAX_CONCURRENT_BUILDS"), Usage: "builds that run at once"},
			&cli.StringFlag{Name: "data-dir", Value: "/var/lib/buildsvc", EnvVars: envs("DATA_DIR"), Usage: "directory of the server's state (the build history database)"},
			&cli.IntFlag{Name: "queue-size", Value: server.DefaultQueueSize, EnvVars: envs("QUEUE_SIZE"), Usage: "builds that may wait for a slot; more are refused with RESOURCE_EXHAUSTED"},
			&cli.DurationFlag{Name: "default-timeout", Value: server.DefaultTimeout, EnvVars: envs("DEFAULT_TIMEOUT"), Usage: "how long a build may run when its request does not say"},
			&cli.DurationFlag{Name: "max-timeout", Value: server.DefaultMaxTimeout, EnvVars: envs("MAX_TIMEOUT"), Usage: "the longest timeout a request may ask for"},
			&cli.Int64Flag{Name: "log-cap", Value: server.DefaultLogCap, EnvVars: envs("LOG_CAP"), Usage: "bytes of step output kept per build"},
			&cli.DurationFlag{Name: "shutdown-grace", Value: 30 * time.Second, EnvVars: envs("SHUTDOWN_GRACE"), Usage: "how long running builds may finish after SIGTERM"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: envs("LOG_LEVEL"), Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: envs("LOG_FORMAT"), Usage: "text or json"},
		},
		Action: serve,
	}
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Exit(fmt.Sprintf("--log-level: %v", err), 2)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, cli.Exit(fmt.Sprintf("--log-format: %q is not text or json", format), 2)
}

func serve(c *cli.Context) error {
	ctx := c.Context
	log, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	store, err := history.Open(filepath.Join(c.String("data-dir"), "history.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	srv, err := server.New(ctx, server.Config{
		BuildKit: buildkitd.Endpoint{
			Address:    c.String("buildkit-addr"),
			CACert:     c.String("buildkit-ca"),
			Cert:       c.String("buildkit-cert"),
			Key:        c.String("buildkit-key"),
			ServerName: c.String("buildkit-server-name"),
		},
		BuilderImage:     c.String("builder-image"),
		BaseImage:        c.String("base-image"),
		DockerConfigDir:  c.String("docker-config"),
		GoProxy:          c.String("goproxy"),
		GoFlags:          c.String("goflags"),
		AllowInsecureGit: c.Bool("allow-insecure-git"),
		MaxConcurrent:    c.Int("max-concurrent-builds"),
		QueueSize:        c.Int("queue-size"),
		DefaultTimeout:   c.Duration("default-timeout"),
		MaxTimeout:       c.Duration("max-timeout"),
		LogCap:           c.Int64("log-cap"),
		Store:            store,
		Logger:           log,
	})
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	lis, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	gs := grpc.NewServer()
	buildv1.RegisterBuildServer(gs, srv)

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	log.Info("serving", "addr", lis.Addr().String(), "buildkit", c.String("buildkit-addr"),
		"builder_image", c.String("builder-image"), "base_image", c.String("base-image"))

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", c.Duration("shutdown-grace"))
	sctx, cancel := context.WithTimeout(context.Background(), c.Duration("shutdown-grace"))
	defer cancel()
	// Running builds first get the grace period, then are interrupted; the
	// streams that follow them end with their last event.
	closeErr := srv.Close(sctx)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	log.Info("stopped")
	return closeErr
}
