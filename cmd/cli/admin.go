package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/docker/go-units"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// adminCommand is the group of commands that operate the server itself
// rather than its builds.
func adminCommand() *cli.Command {
	return &cli.Command{
		Name:  "admin",
		Usage: "operate the build server (cleanup)",
		Description: "Commands for the server's operators. When the server authenticates its callers\n" +
			"(its --callers file), only callers marked admin: true may run them.",
		CustomHelpTemplate: examplesTemplate(cli.SubcommandHelpTemplate,
			example{"buildsvc admin cleanup", "prune BuildKit's cache and the build history now"},
			example{"buildsvc admin cleanup --server build.example:17070 --tls-ca ca.pem --token-file ~/.config/buildsvc/token", "the same on a server that authenticates its callers"},
		),
		Subcommands: []*cli.Command{
			adminCleanupCommand(),
		},
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return usageError(cCtx, "unknown command %q", cCtx.Args().First())
			}
			return cli.ShowSubcommandHelp(cCtx)
		},
	}
}

func adminCleanupCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "cleanup",
		Usage: "run the server's cleanup now and print what it freed",
		Description: "Runs the cleanup the server otherwise runs at its --cleanup-interval: a BuildKit\n" +
			"prune by the server's keep-duration and keep-storage (the Go module and build\n" +
			"caches are kept while younger than the keep-duration) and the build history's\n" +
			"retention by age and count. It waits until the run ends.\n" +
			"With --output json, stdout is the CleanupResponse as one JSON object with every\n" +
			"key, also when 0: buildkitBytesFreed, buildkitRecordsPruned, buildsDeleted and\n" +
			"tempBytesFreed (strings, as protobuf's JSON writes 64-bit integers) and seconds.",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
		}),
		Action: runAdminCleanup,
	},
		example{"buildsvc admin cleanup", "run the cleanup and print what it freed"},
		example{"buildsvc admin cleanup -o json | jq -r .buildkitBytesFreed", "the bytes of BuildKit cache it freed, for a script"},
	)
}

func runAdminCleanup(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	conn, err := dialConn(cCtx)
	if err != nil {
		return err
	}
	defer conn.Close()

	resp, err := buildv1.NewAdminServiceClient(conn).Cleanup(cCtx.Context, &buildv1.CleanupRequest{})
	if err != nil {
		return callError(cCtx, "cleanup", err)
	}
	if asJSON {
		return writeCleanupJSON(cCtx.App.Writer, resp)
	}
	return writeCleanup(cCtx.App.Writer, resp)
}

// writeCleanupJSON prints r as one indented JSON object with every field,
// zero or not, so that scripts need not test for them.
func writeCleanupJSON(w io.Writer, r *buildv1.CleanupResponse) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode cleanup response: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent cleanup response: %w", err)
	}
	out.WriteByte('\n')
	_, err = out.WriteTo(w)
	return err
}

// writeCleanup prints what a cleanup run freed, one line a kind.
func writeCleanup(w io.Writer, r *buildv1.CleanupResponse) error {
	_, err := fmt.Fprintf(w, "buildkit cache  %s freed, %d records pruned\n"+
		"history         %d builds deleted\n"+
		"temp files      %s freed\n"+
		"took            %s\n",
		units.BytesSize(float64(r.GetBuildkitBytesFreed())), r.GetBuildkitRecordsPruned(),
		r.GetBuildsDeleted(),
		units.BytesSize(float64(r.GetTempBytesFreed())),
		(time.Duration(r.GetSeconds() * float64(time.Second))).Round(time.Millisecond))
	return err
}
