package main

import (
	"fmt"
	"strings"

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
	var b strings.Builder
	b.WriteString(strings.TrimRight(cli.CommandHelpTemplate, "\n"))
	b.WriteString("\n\nEXAMPLES:")
	for i, ex := range examples {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\n   {{%q}}\n   {{%q}}", "# "+ex.does, ex.line)
	}
	b.WriteString("\n")
	c.CustomHelpTemplate = b.String()
	return c
}
