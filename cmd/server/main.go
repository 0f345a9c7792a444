// Command buildsvc-server serves the build.v1 Build API: it turns git
// commits of Go programs into images, built and pushed by a buildkitd.
//
// It also serves the Admin API (cleanup now), the gRPC health service (which
// follows whether buildkitd answers) and gRPC reflection on the same
// address, and Prometheus metrics on their own HTTP address. With no
// buildkitd address it starts and supervises a local buildkitd.
//
// Every option is a flag, an environment variable and a key of the YAML
// config file, with that precedence (see config.go and docs/operations.md);
// --print-config shows the effective configuration, --version what the
// binary was built from.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/buildsvc/buildsvc/version"
)

// flagVersion prints the binary's version block and exits. It is a flag
// only, not a setting.
const flagVersion = "version"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp(os.Stdout, os.Stderr, serve).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "buildsvc-server:", err)
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

// serveFunc runs the server with a checked configuration until ctx ends.
type serveFunc func(ctx context.Context, cfg config, log *slog.Logger) error

// newApp makes the command line application: it resolves and checks the
// configuration, then prints it (--print-config) or hands it to run.
// Configuration errors exit with code 2.
func newApp(stdout, stderr io.Writer, run serveFunc) *cli.App {
	return &cli.App{
		Name:      "buildsvc-server",
		Usage:     "serve the build.v1 Build API on top of a buildkitd",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: append(flags(), &cli.BoolFlag{Name: flagVersion,
			Usage: "print the version, commit, Go and BuildKit versions of this binary and exit"}),
		Commands: []*cli.Command{healthCommand()},
		// main prints errors and picks exit codes.
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return cli.Exit(fmt.Sprintf("unexpected argument %q", c.Args().First()), 2)
			}
			if c.Bool(flagVersion) {
				return version.Get().Write(c.App.Writer, c.App.Name)
			}
			file := c.String(flagConfig)
			settings, err := resolve(c, file)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			cfg, err := parseConfig(settings)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if c.Bool(flagPrintConfig) {
				return printConfig(c.App.Writer, settings, file)
			}
			return run(c.Context, cfg, newLogger(stderr, cfg))
		},
	}
}

func newLogger(w io.Writer, cfg config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
