package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "print a build's record: its request, state, and result or error",
		ArgsUsage: "BUILD_ID",
		Flags: []cli.Flag{
			serverFlag(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: text or json", Value: "text"},
		},
		Action: runGet,
	}
}

func runGet(cCtx *cli.Context) error {
	switch args := cCtx.Args().Slice(); {
	case len(args) == 0:
		return usageError(cCtx, "BUILD_ID is missing")
	case len(args) > 1 && strings.HasPrefix(args[1], "-"):
		return usageError(cCtx, "flags must come before BUILD_ID, found %q after it", args[1])
	case len(args) > 1:
		return usageError(cCtx, "want one BUILD_ID, got %d arguments", len(args))
	}
	id := strings.TrimSpace(cCtx.Args().First())
	if id == "" {
		return usageError(cCtx, "BUILD_ID is empty")
	}
	output := cCtx.String("output")
	if output != "text" && output != "json" {
		return usageError(cCtx, "--output %q: want text or json", output)
	}
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	info, err := bc.GetBuild(cCtx.Context, &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "get build", err)
	}
	if output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(info)
		if err != nil {
			return fmt.Errorf("encode build %s: %w", id, err)
		}
		_, err = fmt.Fprintln(cCtx.App.Writer, string(b))
		return err
	}
	return writeBuildInfo(cCtx.App.Writer, info)
}

// writeBuildInfo prints a build's record as aligned "name value" lines,
// leaving out what is not set.
func writeBuildInfo(w io.Writer, info *buildv1.BuildInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(name, value string) {
		if value != "" {
			fmt.Fprintf(tw, "%s\t%s\n", name, value)
		}
	}
	req := info.GetRequest()
	line("build", info.GetBuildId())
	line("state", strings.ToLower(strings.TrimPrefix(info.GetState().String(), "BUILD_STATE_")))
	line("repo", req.GetGitRepo())
	line("ref", req.GetGitCommit())
	line("commit", info.GetCommit())
	line("package", req.GetPackage())
	line("dir", req.GetDir())
	line("tag", req.GetImageTag())
	line("base image", req.GetBaseImage())
	line("created", formatTime(info.GetCreated()))
	line("started", formatTime(info.GetStarted()))
	line("finished", formatTime(info.GetFinished()))
	if res := info.GetResult(); res != nil {
		line("image", res.GetImage())
		line("digest", res.GetDigest())
	}
	if e := info.GetError(); e != nil {
		line("error", fmt.Sprintf("%s (%s)", e.GetMessage(), codes.Code(e.GetCode())))
	}
	return tw.Flush()
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().Format(time.RFC3339)
}
