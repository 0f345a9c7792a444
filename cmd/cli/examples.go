package main

import (
	"github.com/urfave/cli/v2"
)

// example is a command line that a command's help shows, and what it does.
type example struct {
	line string
	does string
}

// withExamples ends c's help with an EXAMPLES section. The examples go into
// the help template as string literals, so that the braces of a --format
// example are printed, not run.
func withExamples(c *cli.Command, examples ...example) *cli.Command {
	c.CustomHelpTemplate = examplesTemplate(cli.CommandHelpTemplate, examples...)
	return c
}
