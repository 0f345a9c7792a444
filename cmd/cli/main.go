// Command buildsvc is the build service's command-line client: it asks a
// build server to turn a git commit into a container image, shows the build's
// progress with BuildKit's progress display, and prints the pushed image.
// Its builds commands list, inspect, follow and cancel the server's builds.
//
// A build lives on the server, so a broken connection does not end it: build
// and builds watch reattach to it with WatchBuild from the last event they
// showed, and builds watch shows it again from its start.
//
// A command's flags may come before or after its arguments (flagsFirst
// moves them ahead before urfave/cli parses the line). --version prints what
// the binary was built from, and completion prints a shell completion script.
//
// Exit codes: 0 on success, 1 when the build failed or the server could not
// do what was asked, 2 on bad usage (missing or malformed flags, or a request
// the server refused as invalid or naming something that does not exist).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2

	// urfaveNoHelpTopic is urfave/cli's exit code for `help UNKNOWN`; to us
	// that is bad usage like any other.
	urfaveNoHelpTopic = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (args[0] is the program name) and returns
// the process's exit code. Every message goes to stdout or stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, flagsFirst(app, args))
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(stderr, "error: %s\n", msg)
		}
		if code := ec.ExitCode(); code != urfaveNoHelpTopic {
			return code
		}
		return exitUsage
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	return exitFailed
}

// newApp builds the command line application. It writes only to stdout and
// stderr and never exits the process: errors come back from Run, and run
// turns them into exit codes.
func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:     "buildsvc",
		HelpName: "buildsvc",
		Usage:    "build container images from git commits of Go programs",
		Description: "A command's flags may come before or after its arguments; after \"--\" everything\n" +
			"is an argument. Each command's --help lists its flags with their environment variables.",
		CustomAppHelpTemplate: examplesTemplate(cli.AppHelpTemplate,
			example{"buildsvc build --repo https://git.example/team/app.git --commit main --tag registry.example/team/app:v1", "build main of a repository into an image and push it"},
			example{"BUILDSVC_SERVER=build.example:17070 buildsvc builds get last -o json", "your newest build's record on another server, as JSON"},
			example{"source <(buildsvc completion bash)", "complete commands and flags in this bash"},
		),
		Writer:    stdout,
		ErrWriter: stderr,
		// --version is versionFlag, printed by the Action.
		HideVersion:               true,
		Flags:                     []cli.Flag{versionFlag()},
		EnableBashCompletion:      true,
		DisableSliceFlagSeparator: true, // --build-flag=-tags=a,b is one flag
		Commands: []*cli.Command{
			buildCommand(),
			buildsCommand(),
			shortGetCommand(),
			bootstrapCommand(),
			adminCommand(),
			versionCommand(),
			completionCommand(),
		},
		Action: func(cCtx *cli.Context) error {
			switch {
			case cCtx.Args().Present():
				return usageError(cCtx, "unknown command %q", cCtx.Args().First())
			case cCtx.Bool("version"):
				return writeVersion(cCtx)
			}
			return cli.ShowAppHelp(cCtx)
		},
		OnUsageError: onUsageError,
		// run prints errors and picks exit codes; urfave's default handler
		// would call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	setOnUsageError(app.Commands)
	return app
}

// setOnUsageError makes every command and subcommand report flag errors as
// bad usage.
func setOnUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
		setOnUsageError(c.Subcommands)
	}
}

// shortGetCommand is `builds get` under its older, shorter name.
func shortGetCommand() *cli.Command {
	c := getCommand()
	c.Usage += " (the same as builds get)"
	return c
}

// onUsageError turns urfave's flag parsing errors (an unknown flag, a flag
// without its value) into exit code 2.
func onUsageError(cCtx *cli.Context, err error, _ bool) error {
	return usageError(cCtx, "%v", err)
}

// usageError reports bad usage of the current command: exit code 2, with a
// pointer to the command's help.
func usageError(cCtx *cli.Context, format string, args ...any) error {
	name := cCtx.App.HelpName
	if cCtx.Command != nil && cCtx.Command.HelpName != "" {
		name = cCtx.Command.HelpName
	}
	return cli.Exit(fmt.Sprintf(format, args...)+"\nRun '"+name+" --help' for usage.", exitUsage)
}

// examplesTemplate is the help template tmpl followed by an EXAMPLES
// section, as withExamples makes it for a command: for the help of the app
// (cli.AppHelpTemplate) and of command groups (cli.SubcommandHelpTemplate).
func examplesTemplate(tmpl string, examples ...example) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(tmpl, "\n"))
	b.WriteString("\n\nEXAMPLES:")
	for i, ex := range examples {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\n   {{%q}}\n   {{%q}}", "# "+ex.does, ex.line)
	}
	b.WriteString("\n")
	return b.String()
}
