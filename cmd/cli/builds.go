package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
	return &cli.Command{
		Name:  "ls",
		Usage: "list builds, newest first",
		Description: "Prints a table of builds, one page at a time (see --limit); when there are more,\n" +
			"stderr says which --page-token shows the next page, and --all shows every page.\n" +
			"With --output json, stdout is one JSON object: {\"builds\": [BuildInfo, ...],\n" +
			"\"nextPageToken\": \"...\"}, where nextPageToken is empty on the last page.",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
			&cli.StringSliceFlag{Name: "state", Usage: "only builds in `STATE` (repeatable): " + strings.Join(stateNames(), ", ")},
			&cli.StringFlag{Name: "repo", Usage: "only builds of the repository `URL`, exactly as it was requested"},
			&cli.IntFlag{Name: "limit", Usage: "at most `N` builds a page, up to 1000", DefaultText: "the server's, 50"},
			&cli.StringFlag{Name: "page-token", Usage: "start at the page `TOKEN` an earlier listing gave"},
			&cli.BoolFlag{Name: "all", Usage: "list every page, not only the first"},
		}),
		Action: runLs,
	}
}

func runLs(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q (flags must come before it)", cCtx.Args().First())
	}
	req, err := listRequest(cCtx)
	if err != nil {
		return err
	}
	asJSON, err := jsonOutput(cCtx)
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
	if asJSON {
		return writeList(cCtx.App.Writer, resp)
	}
	if err := writeTable(cCtx.App.Writer, resp.GetBuilds(), time.Now()); err != nil {
		return err
	}
	switch {
	case len(resp.GetBuilds()) == 0:
		fmt.Fprintln(cCtx.App.ErrWriter, "no builds")
	case resp.GetNextPageToken() != "":
		fmt.Fprintf(cCtx.App.ErrWriter, "more builds: --page-token %s\n", resp.GetNextPageToken())
	}
	return nil
}

// listRequest makes the ListBuilds request from the ls command's flags. Its
// errors are usage errors.
func listRequest(cCtx *cli.Context) (*buildv1.ListBuildsRequest, error) {
	req := &buildv1.ListBuildsRequest{
		GitRepo:   strings.TrimSpace(cCtx.String("repo")),
		PageToken: strings.TrimSpace(cCtx.String("page-token")),
	}
	for _, name := range cCtx.StringSlice("state") {
		s, err := parseState(name)
		if err != nil {
			return nil, usageError(cCtx, "--state: %v", err)
		}
		req.States = append(req.States, s)
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

// writeTable prints builds as a table, one line a build. now is when a
// running build's duration ends.
func writeTable(w io.Writer, builds []*buildv1.BuildInfo, now time.Time) error {
	if len(builds) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUILD\tSTATE\tREPO\tCOMMIT\tTAG\tCREATED\tDURATION")
	for _, info := range builds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			info.GetBuildId(), tableState(info), orDash(info.GetRequest().GetGitRepo()), orDash(shortCommit(info.GetCommit())),
			orDash(info.GetRequest().GetImageTag()), orDash(formatTime(info.GetCreated())), buildDuration(info, now))
	}
	return tw.Flush()
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// buildDuration is how long a build has run: until it finished, or until now
// while it runs; "-" until it starts.
func buildDuration(info *buildv1.BuildInfo, now time.Time) string {
	if info.GetStarted() == nil {
		return "-"
	}
	end := now
	if info.GetFinished() != nil {
		end = info.GetFinished().AsTime()
	}
	d := end.Sub(info.GetStarted().AsTime())
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a build's step output",
		ArgsUsage: "BUILD_ID",
		Description: "Prints the output of the build's steps on stdout, byte for byte, in the order it\n" +
			"was written; warnings, the build's error and reattach notices go to stderr.\n" +
			"Without --follow it prints what the server has so far and returns; with --follow\n" +
			"it goes on until the build ends. The exit code is 0 whatever the build's outcome\n" +
			"('buildsvc builds get' tells it).",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow the output until the build ends"},
		}),
		Action: runLogs,
	}
}

func runLogs(cCtx *cli.Context) error {
	id, bc, closeConn, err := buildClient(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	ctx, follow := cCtx.Context, cCtx.Bool("follow")
	info, err := bc.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "get build", err)
	}
	// Without --follow, stop at the last event there is now.
	var until uint64
	if !follow {
		until = info.GetLastSeq()
	}
	if follow || until > 0 {
		first, err := watchFunc(bc)(ctx, id, 0)
		if err != nil {
			return callError(cCtx, "watch build", err)
		}
		r := newReattacher(bc, id, first, cCtx.App.ErrWriter)
		err = copyLogs(func() (*buildv1.BuildEvent, error) { return r.Recv(ctx) }, until, cCtx.App.Writer, cCtx.App.ErrWriter)
		if err != nil {
			return followError(cCtx, err, id, true)
		}
	}
	if follow {
		// The build has ended since: its final record counts all it dropped.
		if end, err := bc.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: id}); err == nil {
			info = end
		}
	}
	if n := info.GetLogBytesDropped(); n > 0 {
		fmt.Fprintf(cCtx.App.ErrWriter, "warning: build %s: %d bytes of output are not in the log: it reached the server's cap\n", id, n)
	}
	return nil
}

// copyLogs writes the data of the log events recv gives to stdout, and
// warnings and the build's error to stderr, until the event with seq until
// (0: until the build's last event), or until the stream ends.
func copyLogs(recv progress.Recv, until uint64, stdout, stderr io.Writer) error {
	for {
		e, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch ev := e.GetEvent().(type) {
		case *buildv1.BuildEvent_Log:
			if _, err := stdout.Write(ev.Log.GetData()); err != nil {
				return fmt.Errorf("write log: %w", err)
			}
		case *buildv1.BuildEvent_Warning:
			fmt.Fprintf(stderr, "warning: %s\n", ev.Warning.GetShort())
			for _, d := range ev.Warning.GetDetail() {
				fmt.Fprintf(stderr, "  %s\n", d)
			}
		case *buildv1.BuildEvent_Error:
			fmt.Fprintf(stderr, "build %s failed: %s (%s)\n", e.GetBuildId(), ev.Error.GetMessage(), codes.Code(ev.Error.GetCode()))
			return nil
		case *buildv1.BuildEvent_Result:
			return nil
		}
		if until > 0 && e.GetSeq() >= until {
			return nil
		}
	}
}

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "show a build's progress from its start until it ends, as build does",
		ArgsUsage: "BUILD_ID",
		Description: "Replays the build's progress from its first event and follows it live, with the\n" +
			"same display, output and exit code as 'buildsvc build': on success stdout gets\n" +
			"the pushed image pinned by digest. A broken stream is reattached.",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			&cli.StringFlag{Name: "progress", Usage: "the progress output `MODE`: auto, tty, plain, rawjson or quiet", Value: string(progressui.AutoMode)},
		}),
		Action: runWatch,
	}
}

func runWatch(cCtx *cli.Context) error {
	disp, err := newDisplay(cCtx.App.ErrWriter, cCtx.String("progress"))
	if err != nil {
		return usageError(cCtx, "%v", err)
	}
	id, bc, closeConn, err := buildClient(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()
	return showBuild(cCtx, bc, disp, id, func(ctx context.Context) (progress.Recv, error) {
		return watchFunc(bc)(ctx, id, 0)
	})
}

func cancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "stop a queued or running build",
		ArgsUsage: "BUILD_ID",
		Description: "Asks the server to cancel the build and prints the state it is in then. The\n" +
			"build ends CANCELLED shortly after; a build that has already ended stays as it is.",
		Flags:  withConnFlags([]cli.Flag{serverFlag(), outputFlag()}),
		Action: runCancel,
	}
}

func runCancel(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	id, bc, closeConn, err := buildClient(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	info, err := bc.CancelBuild(cCtx.Context, &buildv1.CancelBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "cancel build", err)
	}
	if asJSON {
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
