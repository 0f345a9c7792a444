package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// buildsCommand is the group of commands about builds the server has run or
// is running.
func buildsCommand() *cli.Command {
	return &cli.Command{
		Name:  "builds",
		Usage: "list, inspect, follow and cancel the server's builds",
		Description: "Builds live on the server: they go on when the command that started them goes\n" +
			"away, and their record, events and logs stay in the server's history.\n" +
			"State names are " + strings.Join(stateNames(), ", ") + ".",
		Subcommands: []*cli.Command{
			lsCommand(),
			getCommand(),
			logsCommand(),
			watchCommand(),
			cancelCommand(),
		},
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return usageError(cCtx, "unknown command %q", cCtx.Args().First())
			}
			return cli.ShowSubcommandHelp(cCtx)
		},
	}
}

func lsCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "ls",
		Usage: "list your builds, newest first",
		Description: "Prints a table of builds, one page at a time (see --limit); when there are more,\n" +
			"stderr says which --page-token shows the next page, and --all shows every page.\n" +
			"Times are relative (\"2 minutes ago\"), and ids, commits and errors shortened;\n" +
			"--no-trunc shows them whole, with times in RFC 3339. A shortened id is still\n" +
			"unique among the builds listed, so the other builds commands take it.\n\n" +
			"--filter KEY=VALUE keeps some builds: state=STATE (repeatable, one of\n" +
			strings.Join(stateNames(), ", ") + ")\n" +
			"or repo=URL (exactly as requested). Filters repeat or are separated by commas,\n" +
			"and a part without \"=\" is one more value: state=failed,cancelled,repo=URL.\n\n" +
			"--format prints each build with a Go text/template over these fields; starting\n" +
			"it with \"table\" prints a header and aligns the columns at each \\t:\n" +
			rowFieldsHelp + "\n\n" +
			"-q prints the full ids alone, one a line. With --output json, stdout is one JSON\n" +
			"object: {\"builds\": [BuildInfo, ...], \"nextPageToken\": \"...\"}, where\n" +
			"nextPageToken is empty on the last page.",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
			&cli.StringSliceFlag{Name: "filter", Aliases: []string{"f"}, Usage: "keep the builds that match `KEY=VALUE`: state=STATE or repo=URL (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "format", Usage: "print each build with the Go `TEMPLATE`, e.g. '{{.ID}} {{.State}}'; \"table ...\" adds a header", DefaultText: "a table"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print the builds' full ids only"},
			&cli.BoolFlag{Name: "no-trunc", Usage: "show whole ids, commits and errors, and times in RFC 3339"},
			&cli.StringSliceFlag{Name: "state", Usage: "only builds in `STATE` (repeatable); the same as --filter state=STATE"},
			&cli.StringFlag{Name: "repo", Usage: "only builds of the repository `URL`; the same as --filter repo=URL"},
			&cli.IntFlag{Name: "limit", Usage: "at most `N` builds a page, up to 1000", DefaultText: "the server's, 50"},
			&cli.StringFlag{Name: "page-token", Usage: "start at the page `TOKEN` an earlier listing gave"},
			&cli.BoolFlag{Name: "all", Usage: "list every page, not only the first"},
		}),
		Action: runLs,
	},
		example{"buildsvc builds ls --filter state=failed --no-trunc", "your failed builds, with their whole errors"},
		example{"buildsvc builds ls -q --all --filter state=queued,building", "the ids of all your builds that are queued or building"},
		example{`buildsvc builds ls --format 'table {{.ID}}\t{{.State}}\t{{.Tag}}'`, "a table of your own columns"},
	)
}

// lsOutput is how `builds ls` prints the builds.
type lsOutput struct {
	json   bool
	quiet  bool
	format listFormat
}

func runLs(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	req, err := listRequest(cCtx)
	if err != nil {
		return err
	}
	out, err := lsOutputOf(cCtx)
	if err != nil {
		return err
	}
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	resp, err := listBuilds(cCtx.Context, bc, req, cCtx.Bool("all"))
	if err != nil {
		return callError(cCtx, "list builds", err)
	}
	switch {
	case out.json:
		return writeList(cCtx.App.Writer, resp)
	case out.quiet:
		for _, info := range resp.GetBuilds() {
			if _, err := fmt.Fprintln(cCtx.App.Writer, info.GetBuildId()); err != nil {
				return err
			}
		}
	default:
		rows := buildRows(resp.GetBuilds(), rowOptions{noTrunc: cCtx.Bool("no-trunc"), now: listClock()})
		if err := out.format.write(cCtx.App.Writer, rows); err != nil {
			return err
		}
		if len(rows) == 0 && !cCtx.IsSet("format") {
			fmt.Fprintln(cCtx.App.ErrWriter, "no builds")
		}
	}
	if resp.GetNextPageToken() != "" {
		fmt.Fprintf(cCtx.App.ErrWriter, "more builds: --page-token %s\n", resp.GetNextPageToken())
	}
	return nil
}

// lsOutputOf reads the ls command's output flags, which exclude each other.
// Its errors are usage errors.
func lsOutputOf(cCtx *cli.Context) (lsOutput, error) {
	var out lsOutput
	var err error
	if out.json, err = jsonOutput(cCtx); err != nil {
		return lsOutput{}, err
	}
	out.quiet = cCtx.Bool("quiet")
	var given []string
	for _, name := range []string{"quiet", "format"} {
		if cCtx.IsSet(name) {
			given = append(given, "--"+name)
		}
	}
	if out.json {
		given = append(given, "--output json")
	}
	if len(given) > 1 {
		return lsOutput{}, usageError(cCtx, "%s: give one of them", strings.Join(given, " and "))
	}
	if out.format, err = parseFormat(cCtx.String("format")); err != nil {
		return lsOutput{}, usageError(cCtx, "--format %q: %v", cCtx.String("format"), err)
	}
	return out, nil
}

// listRequest makes the ListBuilds request from the ls command's flags. Its
// errors are usage errors.
func listRequest(cCtx *cli.Context) (*buildv1.ListBuildsRequest, error) {
	f, err := parseFilters(cCtx.StringSlice("filter"))
	if err != nil {
		return nil, usageError(cCtx, "%v", err)
	}
	for _, s := range cCtx.StringSlice("state") {
		if err := f.add("state", strings.TrimSpace(s)); err != nil {
			return nil, usageError(cCtx, "--state: %v", err)
		}
	}
	if repo := strings.TrimSpace(cCtx.String("repo")); repo != "" {
		if err := f.add("repo", repo); err != nil {
			return nil, usageError(cCtx, "--repo: %v", err)
		}
	}
	req := &buildv1.ListBuildsRequest{
		States:    f.states,
		GitRepo:   f.repo,
		PageToken: strings.TrimSpace(cCtx.String("page-token")),
	}
	switch n := cCtx.Int("limit"); {
	case n < 0:
		return nil, usageError(cCtx, "--limit %d: want a positive number", n)
	case n > 1000:
		return nil, usageError(cCtx, "--limit %d: at most 1000", n)
	default:
		req.PageSize = int32(n)
	}
	return req, nil
}

// listBuilds lists the page req asks for or, if all is set, that page and
// every one after it, merged into one response.
func listBuilds(ctx context.Context, bc buildv1.BuildClient, req *buildv1.ListBuildsRequest, all bool) (*buildv1.ListBuildsResponse, error) {
	merged := &buildv1.ListBuildsResponse{}
	for {
		resp, err := bc.ListBuilds(ctx, req)
		if err != nil {
			return nil, err
		}
		merged.Builds = append(merged.Builds, resp.GetBuilds()...)
		merged.NextPageToken = resp.GetNextPageToken()
		if !all || merged.NextPageToken == "" {
			return merged, nil
		}
		if merged.NextPageToken == req.GetPageToken() {
			return nil, fmt.Errorf("the server gave page token %q for the page it came from", req.GetPageToken())
		}
		req.PageToken = merged.NextPageToken
	}
}

// writeList prints a listing as one JSON object with both of its keys, even
// when they are empty, so that scripts need not test for them.
func writeList(w io.Writer, resp *buildv1.ListBuildsResponse) error {
	out := struct {
		Builds        []json.RawMessage `json:"builds"`
		NextPageToken string            `json:"nextPageToken"`
	}{Builds: []json.RawMessage{}, NextPageToken: resp.GetNextPageToken()}
	for _, info := range resp.GetBuilds() {
		b, err := protojson.Marshal(info)
		if err != nil {
			return fmt.Errorf("encode build %s: %w", info.GetBuildId(), err)
		}
		out.Builds = append(out.Builds, b)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode builds: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// tableState is a build's state, with its place in the queue while queued.
func tableState(info *buildv1.BuildInfo) string {
	if info.GetState() == buildv1.BuildState_BUILD_STATE_QUEUED {
		return fmt.Sprintf("queued (%d ahead)", info.GetQueuePosition())
	}
	return stateName(info.GetState())
}

// shortCommit abbreviates a commit SHA as git does in its short form.
func shortCommit(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// buildDuration is how long a build has run: until it finished, or until now
// while it runs; "-" until it starts.
func buildDuration(info *buildv1.BuildInfo, now time.Time) string {
	if info.GetStartTime() == nil {
		return "-"
	}
	end := now
	if info.GetEndTime() != nil {
		end = info.GetEndTime().AsTime()
	}
	d := end.Sub(info.GetStartTime().AsTime())
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func watchCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "watch",
		Usage:     "show a build's progress from its start until it ends, as build does",
		ArgsUsage: buildRefUsage,
		Description: "Replays the build's progress from its first event and follows it live, with the\n" +
			"same display, output and exit code as 'buildsvc build': on success stdout gets\n" +
			"the pushed image pinned by digest. A broken stream is reattached. With --output\n" +
			"json, stdout gets the build's final record (as 'builds get -o json' prints it)\n" +
			"instead, whatever its outcome; the exit code is the same.\n\n" +
			buildRefOrLastHelp,
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
			&cli.StringFlag{Name: "progress", Usage: "the progress output `MODE`: auto, tty, plain, rawjson or quiet", Value: string(progressui.AutoMode)},
		}),
		Action: runWatch,
	},
		example{"buildsvc builds watch", "follow your newest build"},
		example{"buildsvc builds watch --progress plain 20251125-1005", "the build whose id starts with 20251125-1005, as lines of text"},
		example{"buildsvc builds watch -o json last | jq -r .result.digest", "wait for the build and print its image's digest"},
	)
}

func runWatch(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	disp, err := newDisplay(cCtx.App.ErrWriter, cCtx.String("progress"))
	if err != nil {
		return usageError(cCtx, "%v", err)
	}
	id, _, bc, closeConn, err := resolveBuild(cCtx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	open := func(ctx context.Context) (progress.Recv, error) {
		return watchFunc(bc)(ctx, id, 0)
	}
	if asJSON {
		return watchRecord(cCtx, bc, disp, id, open)
	}
	return showBuild(cCtx, bc, disp, id, open)
}

// watchRecord is showBuild for --output json: it shows the build's progress
// until the build ends and then prints the build's final record, whatever
// its outcome, with showBuild's exit code.
func watchRecord(cCtx *cli.Context, bc buildv1.BuildClient, disp display, id string, open openFunc) error {
	var final *buildv1.BuildEvent
	onState := func(e *buildv1.BuildEvent) {
		if ended(e.GetState().GetState()) {
			final = e // shown after the display's last lines, as showBuild does
			return
		}
		if disp.states != nil {
			fmt.Fprintln(disp.states, stateLine(e))
		}
	}
	res, berr, _, err := followBuild(cCtx.Context, bc, disp, id, open, onState)
	if final != nil && disp.states != nil {
		fmt.Fprintln(disp.states, stateLine(final))
	}
	if err != nil {
		return followError(cCtx, err, id, true)
	}
	info, err := bc.GetBuild(cCtx.Context, &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "get build", err)
	}
	if err := writeJSON(cCtx.App.Writer, info); err != nil {
		return err
	}
	switch {
	case berr != nil:
		msg := berr.GetMessage()
		if msg == "" {
			msg = "build failed: " + codes.Code(berr.GetCode()).String()
		}
		return cli.Exit(msg, exitCodeFor(codes.Code(berr.GetCode())))
	case res.GetImage() == "":
		return cli.Exit(fmt.Sprintf("build %s: the server reported success without an image", id), exitFailed)
	}
	return nil
}

func cancelCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "cancel",
		Usage:     "stop a queued or running build",
		ArgsUsage: "BUILD_ID|PREFIX|last",
		Description: "Asks the server to cancel the build and prints the state it is in then. The\n" +
			"build ends CANCELLED shortly after; a build that has already ended stays as it is.\n" +
			"Unlike the other builds commands, cancel needs its BUILD_ID: say last to cancel\n" +
			"your newest build.\n\n" +
			buildRefHelp,
		Flags:  withConnFlags([]cli.Flag{serverFlag(), outputFlag()}),
		Action: runCancel,
	},
		example{"buildsvc builds cancel last", "cancel your newest build"},
		example{"buildsvc builds cancel 20251125-100503", "the build whose id starts with 20251125-100503"},
		example{"buildsvc builds ls -q --filter state=queued | xargs -n1 buildsvc builds cancel", "cancel every build of yours still queued"},
	)
}

func runCancel(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	id, _, bc, closeConn, err := resolveBuild(cCtx, false)
	if err != nil {
		return err
	}
	defer closeConn()

	resp, err := bc.CancelBuild(cCtx.Context, &buildv1.CancelBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "cancel build", err)
	}
	info := resp.GetBuild()
	if asJSON { // the build, as `builds get -o json` prints it
		return writeJSON(cCtx.App.Writer, info)
	}
	line := fmt.Sprintf("build %s: %s", info.GetBuildId(), stateName(info.GetState()))
	switch s := info.GetState(); {
	case s == buildv1.BuildState_BUILD_STATE_CANCELLED:
	case ended(s):
		line += " (it had already ended)"
	default:
		line += " (cancelling)"
	}
	_, err = fmt.Fprintln(cCtx.App.Writer, line)
	return err
}
