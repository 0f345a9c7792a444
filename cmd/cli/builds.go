package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"

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
			verifyCommand(),
		},
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return usageError(cCtx, "unknown command %q", cCtx.Args().First())
			}
			return cli.ShowSubcommandHelp(cCtx)
		},
	}
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
