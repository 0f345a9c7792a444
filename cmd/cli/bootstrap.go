package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/buildsvc/buildsvc/bootstrap"
	"github.com/buildsvc/buildsvc/buildkitd"
)

func bootstrapCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "bootstrap",
		Usage: "assemble the Go builder and runtime base images from local files and push them",
		Description: "For machines that cannot pull public images. Talks to buildkitd directly (no build\n" +
			"server) and builds two images from scratch: the builder (the local Go toolchain,\n" +
			"a static busybox, CA certificates, and the host's git with its HTTPS helpers and\n" +
			"shared libraries, which Go needs for modules fetched straight from a git host) and\n" +
			"the runtime base (CA certificates, a nonroot user). Both are reproducible: the same\n" +
			"files give the same digests. git comes from Debian's git package (apt-get install\n" +
			"git); --no-git builds a builder without it. Progress goes to stderr; stdout gets\n" +
			"the builder's and then the base's reference pinned by digest, one per line.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "buildkit-addr", Usage: "buildkitd's `ADDRESS`, unix:///path or tcp://host:port (required)", EnvVars: []string{"BUILDKIT_HOST", "BUILDKIT_ADDR"}},
			&cli.StringFlag{Name: "buildkit-ca", Usage: "PEM `FILE` of the CA that signs buildkitd's certificate (tcp only)", TakesFile: true},
			&cli.StringFlag{Name: "buildkit-cert", Usage: "PEM client certificate `FILE` for buildkitd (tcp only)", TakesFile: true},
			&cli.StringFlag{Name: "buildkit-key", Usage: "PEM client key `FILE` for buildkitd (tcp only)", TakesFile: true},
			&cli.StringFlag{Name: "docker-config", Usage: "`DIR` of the docker config.json with the registry's credentials (default ~/.docker)", EnvVars: []string{"DOCKER_CONFIG"}, TakesFile: true},
			&cli.StringFlag{Name: "builder-image", Usage: "the `IMAGE` reference to push the builder to, e.g. registry.example/buildsvc/builder:go1.26 (required)", EnvVars: []string{"BUILDER_IMAGE"}},
			&cli.StringFlag{Name: "base-image", Usage: "the `IMAGE` reference to push the base to, e.g. registry.example/buildsvc/base:1 (required)", EnvVars: []string{"BASE_IMAGE"}},
			&cli.StringFlag{Name: "goroot", Usage: "the Go toolchain's `DIR` to put in the builder", Value: bootstrap.DefaultGoRoot, TakesFile: true},
			&cli.StringFlag{Name: "busybox", Usage: "a statically linked busybox `FILE` (Debian: busybox-static)", Value: bootstrap.DefaultBusybox, TakesFile: true},
			&cli.StringFlag{Name: "ca-certs", Usage: "the PEM bundle `FILE` of CA certificates", Value: bootstrap.DefaultCACerts, TakesFile: true},
			&cli.BoolFlag{Name: "no-git", Usage: "leave git out of the builder (then Go fetches modules only through a module proxy, not from a git host)"},
			&cli.BoolFlag{Name: "no-cache", Usage: "redo every step instead of reusing buildkitd's cache"},
			&cli.StringFlag{Name: "progress", Usage: "the progress output `MODE`: auto, tty, plain, rawjson or quiet", Value: string(progressui.AutoMode)},
		},
		Action: runBootstrap,
	},
		example{"buildsvc bootstrap --buildkit-addr unix:///run/buildkit/buildkitd.sock --builder-image registry.example/buildsvc/builder:go1.26 --base-image registry.example/buildsvc/base:1",
			"build both images with the local Go, busybox and git, and push them"},
		example{"BUILDKIT_HOST=tcp://buildkitd.example:1234 buildsvc bootstrap --buildkit-ca ca.pem --buildkit-cert cert.pem --buildkit-key key.pem --no-git --builder-image registry.example/buildsvc/builder:go1.26 --base-image registry.example/buildsvc/base:1",
			"the same through a remote buildkitd over mTLS, with a builder without git"},
	)
}

func runBootstrap(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	ep := buildkitd.Endpoint{
		Address: strings.TrimSpace(cCtx.String("buildkit-addr")),
		CACert:  cCtx.String("buildkit-ca"),
		Cert:    cCtx.String("buildkit-cert"),
		Key:     cCtx.String("buildkit-key"),
	}
	if ep.Address == "" {
		return usageError(cCtx, "--buildkit-addr is required")
	}
	if err := ep.Validate(); err != nil {
		return usageError(cCtx, "%v", err)
	}
	opts := bootstrap.Options{
		GoRoot:       cCtx.String("goroot"),
		Busybox:      cCtx.String("busybox"),
		CACerts:      cCtx.String("ca-certs"),
		BuilderRef:   strings.TrimSpace(cCtx.String("builder-image")),
		BaseRef:      strings.TrimSpace(cCtx.String("base-image")),
		DockerConfig: cCtx.String("docker-config"),
		NoCache:      cCtx.Bool("no-cache"),
		NoGit:        cCtx.Bool("no-git"),
	}
	switch {
	case opts.BuilderRef == "":
		return usageError(cCtx, "--builder-image is required")
	case opts.BaseRef == "":
		return usageError(cCtx, "--base-image is required")
	}
	// Check the files before anything is shown or dialled; Run checks them
	// again, which costs a few stat calls.
	if _, err := opts.Resolve(); err != nil {
		return usageError(cCtx, "%v", err)
	}
	if _, err := buildkitd.LoadDockerConfig(opts.DockerConfig); err != nil {
		return usageError(cCtx, "--docker-config: %v", err)
	}
	disp, err := newDisplay(cCtx.App.ErrWriter, cCtx.String("progress"))
	if err != nil {
		return usageError(cCtx, "%v", err)
	}

	c, err := buildkitd.Dial(cCtx.Context, ep)
	if err != nil {
		return cli.Exit(fmt.Sprintf("bootstrap: %v", err), exitFailed)
	}
	defer c.Close()

	ch := make(chan *client.SolveStatus)
	var res bootstrap.Result
	g, gctx := errgroup.WithContext(cCtx.Context)
	g.Go(func() error {
		// Warnings are shown by the display itself.
		_, err := disp.UpdateFrom(gctx, ch)
		return err
	})
	g.Go(func() error {
		var err error
		res, err = bootstrap.Run(gctx, c, opts, ch)
		return err
	})
	if err := g.Wait(); err != nil {
		switch {
		case errors.Is(err, bootstrap.ErrInvalidOptions):
			return usageError(cCtx, "%v", err)
		case cCtx.Context.Err() != nil:
			return cli.Exit("bootstrap: interrupted", exitFailed)
		}
		return cli.Exit(fmt.Sprintf("bootstrap: %v", err), exitFailed)
	}
	_, err = fmt.Fprintf(cCtx.App.Writer, "%s\n%s\n", res.BuilderRef, res.BaseRef)
	return err
}
