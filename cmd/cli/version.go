package main

import (
	"github.com/urfave/cli/v2"

	"github.com/buildsvc/buildsvc/version"
)

// versionFlag is the app's --version. It is ours, not urfave's: urfave's
// prints App.Version through a package-level printer.
func versionFlag() cli.Flag {
	return &cli.BoolFlag{Name: "version", Usage: "print the version, commit, Go and BuildKit versions of this binary and exit"}
}

func versionCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "version",
		Usage: "print the version, commit, Go and BuildKit versions of this binary",
		Description: "Prints what this binary was built from, one \"name value\" line each: its module\n" +
			"version, the git commit (\"(modified)\" when the work tree had changes), the Go\n" +
			"toolchain and platform, and the BuildKit module it links. The same as --version.",
		Action: runVersion,
	},
		example{"buildsvc version", "print the version block"},
		example{"buildsvc --version | awk '$1 == \"commit\" {print $2}'", "the git commit alone, for a bug report"},
	)
}

func runVersion(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	return writeVersion(cCtx)
}

// writeVersion prints the binary's version block on stdout.
func writeVersion(cCtx *cli.Context) error {
	return version.Get().Write(cCtx.App.Writer, cCtx.App.Name)
}
