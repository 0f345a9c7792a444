package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// getCommand is `builds get`, and `get` for short.
func getCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "get",
		Usage:     "print a build's record: its request, state, and result or error",
		ArgsUsage: buildRefUsage,
		Description: "Prints the record as aligned name and value lines, leaving out what is not\n" +
			"set; with --output json, as one JSON object (BuildInfo, with the API's field\n" +
			"names and state names such as BUILD_STATE_SUCCEEDED).\n\n" +
			buildRefOrLastHelp,
		Flags:  withConnFlags([]cli.Flag{serverFlag(), outputFlag()}),
		Action: runGet,
	},
		example{"buildsvc builds get", "your newest build's record"},
		example{"buildsvc builds get 20251125-100503", "the build whose id starts with 20251125-100503"},
		example{"buildsvc builds get -o json last | jq -r .result.image", "the image your newest build pushed"},
	)
}

func runGet(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	_, info, _, closeConn, err := resolveBuild(cCtx, true)
	if err != nil {
		return err
	}
	defer closeConn()
	if asJSON {
		return writeJSON(cCtx.App.Writer, info)
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
	line("state", stateName(info.GetState()))
	if info.GetState() == buildv1.BuildState_BUILD_STATE_QUEUED {
		line("queue position", fmt.Sprintf("%d ahead", info.GetQueuePosition()))
	}
	line("repo", req.GetGitRepo())
	line("ref", req.GetGitCommit())
	line("commit", info.GetCommit())
	line("package", req.GetPackage())
	line("dir", req.GetDir())
	line("tag", req.GetImageTag())
	for _, t := range req.GetImageTags()[min(1, len(req.GetImageTags())):] {
		line("tag", t) // the accepted request's image_tags start with image_tag
	}
	for _, k := range slices.Sorted(maps.Keys(info.GetLabels())) {
		line("label", k+"="+info.GetLabels()[k])
	}
	line("request id", req.GetRequestId())
	line("base image", req.GetBaseImage())
	if t := req.GetTimeout(); t != nil {
		line("timeout", t.AsDuration().String())
	}
	line("goprivate", req.GetGoprivate())
	for _, c := range info.GetCredentialsGiven() {
		line("credentials", c)
	}
	line("created", formatTime(info.GetCreateTime()))
	line("started", formatTime(info.GetStartTime()))
	line("finished", formatTime(info.GetEndTime()))
	if res := info.GetResult(); res != nil {
		line("image", res.GetImage())
		line("digest", res.GetDigest())
		if res.GetIndex() {
			line("index", "yes")
		}
		for _, l := range platformLines(res) {
			line("platform", l)
		}
		line("builder", res.GetBuilder())
		line("caches", cacheUsageLine(res.GetCacheUsage()))
		for _, l := range verificationLines(info.GetVerification()) {
			line("verification", l)
		}
	}
	if e := info.GetError(); e != nil {
		line("error", fmt.Sprintf("%s (%s)", e.GetMessage(), codes.Code(e.GetCode())))
		line("reason", e.GetReason())
		line("step", e.GetStep())
		if c := e.GetExitCode(); c != 0 {
			line("exit code", strconv.Itoa(int(c)))
		}
		for _, l := range e.GetLogTail() {
			// A tab would start a column of its own.
			line("output", strings.ReplaceAll(l, "\t", "    "))
		}
	}
	if n := info.GetJoined(); n > 0 {
		line("joined", plural(int(n), "identical request"))
	}
	if n := info.GetLogBytesDropped(); n > 0 {
		line("log dropped", fmt.Sprintf("%d bytes over the server's cap", n))
	}
	return tw.Flush()
}

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().Format(time.RFC3339)
}

// plural is "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
