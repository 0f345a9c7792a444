package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func buildCommand() *cli.Command {
	return &cli.Command{
		Name:  "build",
		Usage: "build an image from a git commit, push it, and print its pinned reference",
		Description: "Asks the build server to build the Go package at --package of --repo at --commit\n" +
			"into an image and push it to --tag. Progress goes to stderr; on success the last\n" +
			"line on stdout is the pushed image pinned by digest (REPO@sha256:...).\n\n" +
			"The build runs on the server, not in this command: if the connection breaks, the\n" +
			"command reattaches to the build and goes on from the last event it showed, and an\n" +
			"interrupted command leaves the build running ('buildsvc builds watch ID' shows it\n" +
			"again, 'buildsvc builds cancel ID' stops it). With --detach the command prints the\n" +
			"build's id on stdout and returns at once.",
		Flags: withConnFlags(append([]cli.Flag{
			&cli.StringFlag{Name: "repo", Usage: "the git repository's `URL` (required)"},
			&cli.StringFlag{Name: "commit", Usage: "the `REF` to build: a branch, a tag or a commit SHA", DefaultText: "the default branch"},
			&cli.StringFlag{Name: "tag", Usage: "the `IMAGE` reference to push to, e.g. registry.example/team/app:v1 (required)"},
			&cli.StringFlag{Name: "package", Usage: "the Go `PACKAGE` to build, relative to --dir", DefaultText: "."},
			&cli.StringFlag{Name: "dir", Usage: "the `DIR` of the Go module (its go.mod) inside the repository", DefaultText: "."},
			&cli.StringSliceFlag{Name: "build-flag", Usage: "an extra go build `FLAG`, e.g. -tags=netgo (repeatable)"},
			&cli.StringFlag{Name: "ldflags", Usage: "the `FLAGS` given to go build -ldflags, e.g. \"-s -w\"", DefaultText: "none"},
			&cli.StringSliceFlag{Name: "env", Usage: "extra environment for go build, `KEY=VALUE` (repeatable)"},
			&cli.StringFlag{Name: "base-image", Usage: "the runtime base `IMAGE`", DefaultText: "the server's"},
			&cli.StringSliceFlag{Name: "label", Usage: "an extra image label, `KEY=VALUE` (repeatable)"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long the build may run once it has left the queue, e.g. 10m; at most the server's maximum", DefaultText: "the server's default"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the build, print its id and return without waiting for it"},
			serverFlag(),
			&cli.StringFlag{Name: "progress", Usage: "the progress output `MODE`: auto, tty, plain, rawjson or quiet", Value: string(progressui.AutoMode)},
		}, privateFlags()...)),
		Action: runBuild,
	}
}

func runBuild(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q (flags must come before it)", cCtx.Args().First())
	}
	req, err := buildRequest(cCtx)
	if err != nil {
		return usageError(cCtx, "%v", err)
	}
	if cCtx.Bool("detach") {
		return startBuild(cCtx, req)
	}
	disp, err := newDisplay(cCtx.App.ErrWriter, cCtx.String("progress"))
	if err != nil {
		return usageError(cCtx, "%v", err)
	}
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	return showBuild(cCtx, bc, disp, "", func(ctx context.Context) (progress.Recv, error) {
		stream, err := bc.CreateImage(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("create image: %w", err)
		}
		return stream.Recv, nil
	})
}

// startBuild starts the build without waiting for it and prints its id.
func startBuild(cCtx *cli.Context, req *buildv1.CreateImageRequest) error {
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := bc.StartBuild(cCtx.Context, req)
	if err != nil {
		return callError(cCtx, "start build", err)
	}
	if resp.GetJoined() {
		fmt.Fprintf(cCtx.App.ErrWriter, "build %s: joined an identical build that was already queued or running\n", resp.GetBuildId())
	}
	_, err = fmt.Fprintln(cCtx.App.Writer, resp.GetBuildId())
	return err
}

// buildRequest makes the CreateImage request from the build command's flags.
// Its errors are usage errors.
func buildRequest(cCtx *cli.Context) (*buildv1.CreateImageRequest, error) {
	req := &buildv1.CreateImageRequest{
		GitRepo:    strings.TrimSpace(cCtx.String("repo")),
		GitCommit:  strings.TrimSpace(cCtx.String("commit")),
		ImageTag:   strings.TrimSpace(cCtx.String("tag")),
		Package:    cCtx.String("package"),
		Dir:        cCtx.String("dir"),
		BuildFlags: cCtx.StringSlice("build-flag"),
		Ldflags:    cCtx.String("ldflags"),
		BaseImage:  strings.TrimSpace(cCtx.String("base-image")),
	}
	switch {
	case req.GitRepo == "":
		return nil, fmt.Errorf("--repo is required")
	case req.ImageTag == "":
		return nil, fmt.Errorf("--tag is required")
	}
	var err error
	if req.Env, err = parseKV("env", cCtx.StringSlice("env")); err != nil {
		return nil, err
	}
	if req.Labels, err = parseKV("label", cCtx.StringSlice("label")); err != nil {
		return nil, err
	}
	switch t := cCtx.Duration("timeout"); {
	case t < 0:
		return nil, fmt.Errorf("--timeout %v: want a positive duration", t)
	case t > 0:
		req.Timeout = durationpb.New(t)
	}
	if err := addPrivate(cCtx, req); err != nil {
		return nil, err
	}
	return req, nil
}

// display is a build's progress display, and where lines about the build's
// state changes go.
type display struct {
	progressui.Display
	// states is nil when state changes are not shown: on a tty they would
	// tear the display, and rawjson and quiet output have no place for them.
	states io.Writer
}

// newDisplay makes the progress display for the --progress mode, on stderr.
func newDisplay(stderr io.Writer, mode string) (display, error) {
	switch m := progressui.DisplayMode(mode); m {
	case progressui.AutoMode:
		if d, err := progressui.NewDisplay(stderr, progressui.TtyMode); err == nil {
			return display{Display: d}, nil
		}
		return plainDisplay(stderr)
	case progressui.PlainMode:
		return plainDisplay(stderr)
	case progressui.TtyMode, progressui.RawJSONMode, progressui.QuietMode:
		d, err := progressui.NewDisplay(stderr, m)
		if err != nil {
			return display{}, fmt.Errorf("--progress %s: %w", mode, err)
		}
		return display{Display: d}, nil
	default:
		return display{}, fmt.Errorf("--progress %q: want auto, tty, plain, rawjson or quiet", mode)
	}
}

// plainDisplay shows progress and state changes as lines of text. Both write
// through one lock: they come from different goroutines.
func plainDisplay(stderr io.Writer) (display, error) {
	w := &lockedWriter{w: stderr}
	d, err := progressui.NewDisplay(w, progressui.PlainMode)
	if err != nil {
		return display{}, fmt.Errorf("--progress plain: %w", err)
	}
	return display{Display: d, states: w}, nil
}

// ended reports whether a build in state s has ended.
func ended(s buildv1.BuildState) bool {
	switch s {
	case buildv1.BuildState_BUILD_STATE_SUCCEEDED, buildv1.BuildState_BUILD_STATE_FAILED,
		buildv1.BuildState_BUILD_STATE_CANCELLED, buildv1.BuildState_BUILD_STATE_INTERRUPTED:
		return true
	}
	return false
}

// stateLine describes a state change in one line, e.g.
// "build 01J...: building: resolved main to 1a2b3c", or
// "build 01J...: queued: 2 ahead".
func stateLine(e *buildv1.BuildEvent) string {
	sc := e.GetState()
	line := fmt.Sprintf("build %s: %s", e.GetBuildId(), stateName(sc.GetState()))
	if sc.GetState() == buildv1.BuildState_BUILD_STATE_QUEUED && sc.GetQueuePosition() > 0 {
		line += fmt.Sprintf(": %d ahead", sc.GetQueuePosition())
	}
	if msg := sc.GetMessage(); msg != "" {
		line += ": " + msg
	}
	return line
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
