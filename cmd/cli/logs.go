package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/buildsvc/buildsvc/progress"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func logsCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "logs",
		Usage:     "print a build's step output",
		ArgsUsage: buildRefUsage,
		Description: "Prints the build's steps and their output on stdout as BuildKit's plain progress\n" +
			"does ('docker buildx history logs' too): each line starts with its step's number,\n" +
			"\"#3 0.512 go: downloading ...\", and each step ends with \"#3 DONE 2.1s\" or its\n" +
			"error. With --raw, stdout gets the steps' output alone, byte for byte, in the\n" +
			"order it was written, and warnings go to stderr. With --output json, stdout gets\n" +
			"the build's events, one JSON object a line (BuildEvent, with the API's field\n" +
			"names): states, steps, output, warnings, and the result or error.\n\n" +
			"Without --follow it prints what the server has so far and returns; with --follow\n" +
			"it goes on until the build ends, reattaching when the stream breaks. The build's\n" +
			"error and reattach notices go to stderr. The exit code is 0 whatever the build's\n" +
			"outcome ('buildsvc builds get' tells it). Of the steps of a running build that\n" +
			"run side by side, the plain output shows one until they end (a note on stderr\n" +
			"says so); --raw and --output json show all.\n\n" +
			buildRefOrLastHelp,
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow the output until the build ends"},
			&cli.BoolFlag{Name: "raw", Usage: "print the steps' output alone, byte for byte, without step numbers"},
		}),
		Action: runLogs,
	},
		example{"buildsvc builds logs", "the steps of your newest build"},
		example{"buildsvc builds logs -f 20251125-1005", "follow the build whose id starts with 20251125-1005 until it ends"},
		example{"buildsvc builds logs -o json last | jq -c 'select(.error)'", "the build's error event"},
	)
}

// logsMode is how `builds logs` prints a build's events.
type logsMode int

const (
	logsPlain logsMode = iota // progressui's plain display
	logsRaw                   // the log data alone
	logsJSON                  // every event as a JSON line
)

func runLogs(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	mode := logsPlain
	switch {
	case asJSON && cCtx.Bool("raw"):
		return usageError(cCtx, "--raw and --output json: give one of them")
	case asJSON:
		mode = logsJSON
	case cCtx.Bool("raw"):
		mode = logsRaw
	}
	id, info, bc, closeConn, err := resolveBuild(cCtx, true)
	if err != nil {
		return err
	}
	defer closeConn()

	ctx, follow := cCtx.Context, cCtx.Bool("follow")
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
		stdout, stderr := cCtx.App.Writer, cCtx.App.ErrWriter
		switch mode {
		case logsRaw:
			err = copyLogs(ctx, r.Recv, until, stdout, stderr)
		case logsJSON:
			err = writeEvents(ctx, r.Recv, until, stdout)
		default:
			err = showLogs(ctx, r.Recv, until, stdout, stderr)
		}
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

// recvFunc reads a build's next event, as Reattacher.Recv does.
type recvFunc func(ctx context.Context) (*buildv1.BuildEvent, error)

// eachEvent calls fn with each event recv gives until the build's last event
// (its result or error), the event with seq until (0: no such limit), or the
// end of the stream.
func eachEvent(ctx context.Context, recv recvFunc, until uint64, fn func(*buildv1.BuildEvent) error) error {
	for {
		e, err := recv(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
		switch e.GetEvent().(type) {
		case *buildv1.BuildEvent_Result, *buildv1.BuildEvent_Error:
			return nil
		}
		if until > 0 && e.GetSeq() >= until {
			return nil
		}
	}
}

// showLogs shows the progress events recv gives (see eachEvent) with
// progressui's plain display on stdout, and the build's error on stderr.
func showLogs(ctx context.Context, recv recvFunc, until uint64, stdout, stderr io.Writer) error {
	disp, err := progressui.NewDisplay(stdout, progressui.PlainMode)
	if err != nil {
		return err
	}
	ch := make(chan *client.SolveStatus)
	var (
		failed, outcome *buildv1.BuildEvent
		// open are the steps that have started and not ended.
		open = map[string]bool{}
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// The display prints warnings as they come, as "#N WARN: ...".
		_, err := disp.UpdateFrom(gctx, ch)
		return err
	})
	g.Go(func() error {
		defer close(ch)
		return eachEvent(gctx, recv, until, func(e *buildv1.BuildEvent) error {
			switch {
			case e.GetError() != nil:
				failed, outcome = e, e
			case e.GetResult() != nil:
				outcome = e
			case e.GetVertex() != nil:
				v := e.GetVertex()
				open[v.GetDigest()] = v.GetStarted() != nil && v.GetCompleted() == nil
			}
			s := progress.ToSolveStatus(e)
			if s == nil {
				return nil
			}
			select {
			case ch <- s:
				return nil
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		})
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if failed != nil {
		// After the display's last lines, which show the failed step.
		fmt.Fprintln(stderr, failedLine(failed))
	}
	if n := countTrue(open); outcome == nil && n > 1 {
		// The plain display shows one running step at a time, and the
		// output of the others once they end, which they have not yet.
		fmt.Fprintf(stderr, "note: %d steps are still running; the output of all but one of them is not shown until they end: --raw and --output json show all of it\n", n)
	}
	return nil
}

// countTrue counts the keys of m that are true.
func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

// copyLogs writes the data of the log events recv gives (see eachEvent) to
// stdout, and warnings and the build's error to stderr.
func copyLogs(ctx context.Context, recv recvFunc, until uint64, stdout, stderr io.Writer) error {
	return eachEvent(ctx, recv, until, func(e *buildv1.BuildEvent) error {
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
			fmt.Fprintln(stderr, failedLine(e))
		}
		return nil
	})
}

// failedLine tells a build's error event in one line.
func failedLine(e *buildv1.BuildEvent) string {
	return fmt.Sprintf("build %s failed: %s (%s)", e.GetBuildId(), e.GetError().GetMessage(), codes.Code(e.GetError().GetCode()))
}

// writeEvents writes the events recv gives (see eachEvent) to w, one JSON
// object a line, with the API's JSON field names.
func writeEvents(ctx context.Context, recv recvFunc, until uint64, w io.Writer) error {
	return eachEvent(ctx, recv, until, func(e *buildv1.BuildEvent) error {
		b, err := protojson.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", e.GetSeq(), err)
		}
		// protojson varies its spacing on purpose; compact JSON is one line,
		// the same every run.
		var line bytes.Buffer
		if err := json.Compact(&line, b); err != nil {
			return fmt.Errorf("encode event %d: %w", e.GetSeq(), err)
		}
		line.WriteByte('\n')
		_, err = line.WriteTo(w)
		return err
	})
}
