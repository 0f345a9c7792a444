package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func verifyCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "verify",
		Usage:     "rebuild a succeeded build from nothing and say whether its image is the same, bit for bit",
		ArgsUsage: "BUILD_ID|PREFIX|last",
		Description: "The server rebuilds the build's commit with empty caches (new cache mounts, no\n" +
			"BuildKit cache, no build-cache store) and the same pinned images and settings,\n" +
			"without pushing, and compares each platform's image with the one pushed: the\n" +
			"digests, and for a difference the config, the layers and the files in them that\n" +
			"differ. The answer is stored with the build (builds get shows it). It exits 0\n" +
			"when the images are the same, 1 when they are not.\n\n" +
			buildRefHelp,
		Flags:  withConnFlags([]cli.Flag{serverFlag(), outputFlag()}),
		Action: runVerify,
	},
		example{"buildsvc builds verify last", "verify your newest build"},
	)
}

func runVerify(cCtx *cli.Context) error {
	asJSON, err := jsonOutput(cCtx)
	if err != nil {
		return err
	}
	id, _, bc, closeConn, err := resolveBuild(cCtx, false)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := bc.VerifyBuild(cCtx.Context, &buildv1.VerifyBuildRequest{BuildId: id})
	if err != nil {
		return callError(cCtx, "verify build", err)
	}
	v := resp.GetVerification()
	if asJSON {
		if err := writeJSON(cCtx.App.Writer, v); err != nil {
			return err
		}
	} else {
		for _, l := range verificationLines(v) {
			if _, err := fmt.Fprintf(cCtx.App.Writer, "build %s: %s\n", id, l); err != nil {
				return err
			}
		}
	}
	if !v.GetReproducible() {
		return cli.Exit("", exitFailed)
	}
	return nil
}

// verificationLines say what a verification found, a line per platform
// and per difference.
func verificationLines(v *buildv1.Verification) []string {
	if v == nil {
		return nil
	}
	verdict := "reproducible"
	if !v.GetReproducible() {
		verdict = "NOT reproducible"
	}
	lines := []string{fmt.Sprintf("%s (rebuilt from nothing in %s)", verdict, v.GetRebuildDuration().AsDuration().Round(1e7))}
	for _, p := range v.GetPlatforms() {
		if p.GetReproducible() {
			lines = append(lines, fmt.Sprintf("%s %s: the same", p.GetPlatform(), p.GetOriginalDigest()))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s pushed %s, rebuilt %s", p.GetPlatform(), p.GetOriginalDigest(), p.GetRebuiltDigest()))
		for _, d := range p.GetDifferences() {
			l := "  " + d.GetWhat() + " differs"
			if len(d.GetFiles()) > 0 {
				l += ": " + strings.Join(d.GetFiles(), "; ")
			}
			lines = append(lines, l)
		}
	}
	return lines
}
