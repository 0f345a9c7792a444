package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func buildCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "build",
		Usage: "build an image from a git commit, push it, and print its pinned reference",
		Description: "Asks the build server to build the Go package at --package of --repo at --commit\n" +
			"into an image and push it to --tag. Progress goes to stderr, starting with the\n" +
			"build's id once the server has named it; on success the last line on stdout is\n" +
			"the pushed image pinned by digest (REPO@sha256:...). With --output json, stdout\n" +
			"gets the build's events instead, one JSON object (the API's BuildEvent) a line,\n" +
			"the last one the result or the error; the exit code is the same.\n\n" +
			"The build runs on the server, not in this command: if the connection breaks, the\n" +
			"command reattaches to the build and goes on from the last event it showed.\n" +
			"Ctrl-C cancels the build and waits until the server has stopped it; Ctrl-C again\n" +
			"leaves at once, the build maybe still running ('buildsvc builds cancel ID' stops\n" +
			"it). Either way the exit code is 130. When the build fails, the error names it\n" +
			"and the commands that show it again ('buildsvc builds watch ID') and its logs\n" +
			"('buildsvc builds logs ID'); with --progress quiet that is all stderr gets. With\n" +
			"tty and plain progress it comes after why (COMPILE_ERROR, TIMEOUT, ...), the step\n" +
			"that failed with its exit code, and that step's last lines of output.\n" +
			"With --progress rawjson, stderr is JSON lines: BuildKit's SolveStatus, and the\n" +
			"command's own {\"buildId\": ID, \"message\": TEXT}, the first of which says the\n" +
			"build started; only a final \"error: ...\" line is text.\n\n" +
			"With --detach the command prints the build's id on stdout (with --output json,\n" +
			"the StartBuildResponse: {\"buildId\": ID, \"joined\": BOOL}) and returns at once.",
		Flags: withConnFlags(append([]cli.Flag{
			&cli.StringFlag{Name: "repo", Usage: "the git repository's `URL` (required)"},
			&cli.StringFlag{Name: "commit", Usage: "the `REF` to build: a branch, a tag or a commit SHA", DefaultText: "the default branch"},
			&cli.StringSliceFlag{Name: "tag", Aliases: []string{"t"}, Usage: "an `IMAGE` reference to push to, e.g. registry.example/team/app:v1 (required; repeatable: one build pushes every tag)"},
			&cli.StringFlag{Name: "package", Usage: "the Go `PACKAGE` to build, relative to --dir", DefaultText: "."},
			&cli.StringFlag{Name: "dir", Usage: "the `DIR` of the Go module (its go.mod) inside the repository", DefaultText: "."},
			&cli.StringSliceFlag{Name: "build-flag", Usage: "an extra go build `FLAG`, e.g. -tags=netgo (repeatable)"},
			&cli.StringFlag{Name: "ldflags", Usage: "the `FLAGS` given to go build -ldflags, e.g. \"-s -w\"", DefaultText: "none"},
			&cli.StringSliceFlag{Name: "env", Usage: "extra environment for go build, `KEY=VALUE` (repeatable)"},
			&cli.StringFlag{Name: "base-image", Usage: "the runtime base `IMAGE`", DefaultText: "the server's"},
			&cli.StringSliceFlag{Name: "label", Usage: "an extra image label, `KEY=VALUE` (repeatable)"},
			&cli.StringSliceFlag{Name: "build-label", Usage: "a label of the build record (not the image), `KEY=VALUE`, for 'builds ls --filter label=KEY=VALUE' (repeatable)"},
			&cli.StringFlag{Name: "compression", Usage: "the `FORMAT` of the image's new layer: zstd, gzip (for runtimes older than containerd 1.5 or Docker 23), estargz or uncompressed", DefaultText: "the server's, zstd"},
			&cli.IntFlag{Name: "compression-level", Usage: "the compression `LEVEL` (zstd 1-22, gzip and estargz 1-9)", DefaultText: "the format's default"},
			&cli.BoolFlag{Name: "force-compression", Usage: "recompress the base image's layers too"},
			&cli.BoolFlag{Name: "provenance", Usage: "attach SLSA provenance (BuildKit's, mode=max) as an attestation: the image is pushed in an OCI index"},
			&cli.BoolFlag{Name: "sbom", Usage: "attach an SPDX SBOM of the Go binary (per platform) as an attestation: the image is pushed in an OCI index"},
			&cli.StringSliceFlag{Name: "platform", Usage: "`PLATFORMS` to build for, comma-separated os/arch[/variant] (e.g. linux/amd64,linux/arm64): cross-compiled, pushed as an OCI index; default the worker's own"},
			&cli.StringFlag{Name: "request-id", Usage: "an idempotency `KEY`: a retry with the same key gets the same build, even after it ended"},
			&cli.DurationFlag{Name: "timeout", Usage: "the `DURATION` the build may run once it has left the queue, e.g. 10m; at most the server's maximum", DefaultText: "the server's default"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the build, print its id and return without waiting for it"},
			serverFlag(),
			&cli.StringFlag{Name: "progress", Usage: "the progress output `MODE` on stderr: auto, tty, plain, rawjson or quiet", Value: string(progressui.AutoMode)},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the `FORMAT` of stdout: text (the pushed image), or json (every build event, one JSON object a line)", Value: "text"},
		}, privateFlags()...)),
		Action: runBuild,
	},
		example{"buildsvc build --repo https://git.example/team/app.git --commit main --package ./cmd/app --tag registry.example/team/app:v1", "build ./cmd/app of the main branch, push it and print the pinned image"},
		example{"buildsvc build -d --repo https://git.example/team/app.git -t registry.example/team/app:v1 -t registry.example/team/app:latest --build-label team=payments", "start the build of two tags, labelled for 'builds ls --filter label=team=payments', and print its id at once"},
		example{"buildsvc build --progress quiet -o json --repo https://git.example/team/app.git --tag registry.example/team/app:v1 | jq -r 'select(.result) | .result.image'", "for a script: no progress, every build event a line of JSON on stdout"},
	)
}

func runBuild(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	req, err := buildRequest(cCtx)
	if err != nil {
		return usageError(cCtx, "%v", err)
	}
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	if cCtx.Bool("detach") {
		return startBuild(cCtx, req, asJSON)
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

	sigs, stop := interrupts(cCtx.Context)
	defer stop()
	o := followOptions{
		open: func(ctx context.Context) (progress.Recv, error) {
			stream, err := bc.CreateImage(ctx, req)
			if err != nil {
				return nil, fmt.Errorf("create image: %w", err)
			}
			return stream.Recv, nil
		},
		interrupts: sigs,
	}
	if asJSON {
		o.events = cCtx.App.Writer
	}
	return showBuildWith(cCtx, bc, disp, o)
}

// startBuild starts the build without waiting for it and prints its id, or
// with asJSON the StartBuild response as one line of JSON.
func startBuild(cCtx *cli.Context, req *buildv1.CreateImageRequest, asJSON bool) error {
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := bc.StartBuild(cCtx.Context, &buildv1.StartBuildRequest{Request: req})
	if err != nil {
		return callError(cCtx, "start build", err)
	}
	if resp.GetJoined() {
		fmt.Fprintf(cCtx.App.ErrWriter, "build %s: joined an identical build that was already queued or running\n", resp.GetBuildId())
	}
	if asJSON {
		return writeJSONLine(cCtx.App.Writer, resp)
	}
	_, err = fmt.Fprintln(cCtx.App.Writer, resp.GetBuildId())
	return err
}

// writeJSONLine prints m as one line of JSON, with the API's field names,
// every unset field left out. protojson's spacing varies from run to run on
// purpose; compacted, the line is the same for the same message.
func writeJSONLine(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return fmt.Errorf("compact %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(w)
	return err
}

// buildRequest makes the CreateImage request from the build command's flags.
// Its errors are usage errors.
func buildRequest(cCtx *cli.Context) (*buildv1.CreateImageRequest, error) {
	req := &buildv1.CreateImageRequest{
		GitRepo:    strings.TrimSpace(cCtx.String("repo")),
		GitCommit:  strings.TrimSpace(cCtx.String("commit")),
		RequestId:  strings.TrimSpace(cCtx.String("request-id")),
		Package:    cCtx.String("package"),
		Dir:        cCtx.String("dir"),
		BuildFlags: cCtx.StringSlice("build-flag"),
		Ldflags:    cCtx.String("ldflags"),
		BaseImage:  strings.TrimSpace(cCtx.String("base-image")),
	}
	for _, t := range cCtx.StringSlice("tag") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if req.ImageTag == "" {
			req.ImageTag = t
		} else {
			req.ImageTags = append(req.ImageTags, t)
		}
	}
	switch {
	case req.GitRepo == "":
		return nil, fmt.Errorf("--repo is required")
	case req.ImageTag == "":
		return nil, fmt.Errorf("--tag is required")
	}
	var err error
	if req.BuildLabels, err = parseKV("build-label", cCtx.StringSlice("build-label")); err != nil {
		return nil, err
	}
	if c := cCtx.String("compression"); c != "" {
		v, ok := buildv1.LayerCompression_value["LAYER_COMPRESSION_"+strings.ToUpper(c)]
		if !ok || v == 0 {
			return nil, fmt.Errorf("--compression %q: want zstd, gzip, estargz or uncompressed", c)
		}
		req.Compression = buildv1.LayerCompression(v)
	}
	req.CompressionLevel = int32(cCtx.Int("compression-level"))
	req.ForceCompression = cCtx.Bool("force-compression")
	req.Provenance = cCtx.Bool("provenance")
	req.Sbom = cCtx.Bool("sbom")
	for _, p := range cCtx.StringSlice("platform") {
		for _, one := range strings.Split(p, ",") {
			if one = strings.TrimSpace(one); one != "" {
				req.Platforms = append(req.Platforms, one)
			}
		}
	}
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

// display is a build's progress display on stderr, and where lines about
// the build (its start, state changes, notices) go.
type display struct {
	progressui.Display
	// mode is the display's mode: tty, plain, rawjson or quiet, never auto.
	mode progressui.DisplayMode
	// w is stderr. But for tty, where only the start line is written and
	// before the display starts, the display writes through w too, behind a
	// lock: lines come from other goroutines than the display's.
	w io.Writer
	// states is nil when state changes are not shown: on a tty they would
	// tear the display, and rawjson and quiet output have no place for them.
	states io.Writer
}

// newDisplay makes the progress display for the --progress mode, on stderr.
func newDisplay(stderr io.Writer, mode string) (display, error) {
	switch m := progressui.DisplayMode(mode); m {
	case progressui.AutoMode:
		if d, err := progressui.NewDisplay(stderr, progressui.TtyMode); err == nil {
			return display{Display: d, mode: progressui.TtyMode, w: stderr}, nil
		}
		return lockedDisplay(stderr, progressui.PlainMode)
	case progressui.TtyMode:
		d, err := progressui.NewDisplay(stderr, m)
		if err != nil {
			return display{}, fmt.Errorf("--progress %s: %w", mode, err)
		}
		return display{Display: d, mode: m, w: stderr}, nil
	case progressui.PlainMode, progressui.RawJSONMode, progressui.QuietMode:
		return lockedDisplay(stderr, m)
	default:
		return display{}, fmt.Errorf("--progress %q: want auto, tty, plain, rawjson or quiet", mode)
	}
}

// lockedDisplay is a display in mode m whose progress and lines about the
// build write through one lock: they come from different goroutines. The
// plain display shows state changes too.
func lockedDisplay(stderr io.Writer, m progressui.DisplayMode) (display, error) {
	w := &lockedWriter{w: stderr}
	d, err := progressui.NewDisplay(w, m)
	if err != nil {
		return display{}, fmt.Errorf("--progress %s: %w", m, err)
	}
	disp := display{Display: d, mode: m, w: w}
	if m == progressui.PlainMode {
		disp.states = w
	}
	return disp, nil
}

// started says that build id has started, once its first event named it,
// before the display starts: "build ID: started", or in rawjson a line of
// the command's own JSON. Quiet says nothing.
func (d display) started(id string) {
	if d.mode != progressui.QuietMode {
		d.line(id, fmt.Sprintf("build %s: started", id))
	}
}

// line writes msg about build id to stderr: as text, or in rawjson as
// {"buildId": ID, "message": MSG}, which leaves the stream JSON lines (and
// decodes as an empty SolveStatus). It is for every mode but tty while the
// display runs (see follower.notice).
func (d display) line(id, msg string) {
	if d.mode != progressui.RawJSONMode {
		fmt.Fprintln(d.w, msg)
		return
	}
	b, err := json.Marshal(struct {
		BuildID string `json:"buildId"`
		Message string `json:"message"`
	}{id, msg})
	if err == nil {
		fmt.Fprintln(d.w, string(b))
	}
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

// stateLine is the line a state change reads as: the server's phrase
// ("resolved main to 1a2b3c4d5e6f in 12ms", "queued (position 3)",
// "building 1a2b3c4d5e6f", "pushing TAG"), or the state's name with what
// it ended with ("succeeded: pushed IMAGE", "failed: ERROR").
func stateLine(e *buildv1.BuildEvent) string {
	sc := e.GetState()
	name, msg := stateName(sc.GetState()), sc.GetMessage()
	switch {
	case ended(sc.GetState()) && msg != "":
		return fmt.Sprintf("build %s: %s: %s", e.GetBuildId(), name, msg)
	case ended(sc.GetState()):
	case msg != "":
		return fmt.Sprintf("build %s: %s", e.GetBuildId(), msg)
	case sc.GetState() == buildv1.BuildState_BUILD_STATE_QUEUED:
		return fmt.Sprintf("build %s: queued (position %d)", e.GetBuildId(), sc.GetQueuePosition())
	}
	return fmt.Sprintf("build %s: %s", e.GetBuildId(), name)
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
