package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// urfave/cli v2 parses a command's flags with Go's flag package, which stops
// at the first argument that is not a flag: `builds get ID --output json`
// would leave --output and json as arguments. flagsFirst moves them ahead of
// the arguments before v2 parses the line, so that flags may come anywhere.

// completionFlag is the flag v2's shell completion scripts put last on the
// command line they ask the program to complete.
const completionFlag = "--generate-bash-completion"

// flagsFirst rewrites the command line args (args[0] is the program name)
// so that the flags of the command it runs come before that command's
// arguments; see hoistFlags. It walks app's commands from the args: a
// command's name ends its parent's flags and arguments. The line of the
// help command is left as it is.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	rest := args[1:]
	complete := false
	if rest[len(rest)-1] == completionFlag {
		complete, rest = true, rest[:len(rest)-1]
	}
	flags := append([]cli.Flag{cli.HelpFlag}, app.Flags...)
	cmds := app.Commands
	out := []string{args[0]}
	for {
		i := firstArg(takesValue(flags), rest)
		if i < 0 {
			out = append(out, hoistFlags(flags, rest)...)
			break
		}
		if isHelpCommand(rest[i]) {
			out = append(out, rest...)
			break
		}
		cmd := findCommand(cmds, rest[i])
		if cmd == nil {
			out = append(out, hoistFlags(flags, rest)...)
			break
		}
		// The flags before the command's name are its parent's.
		out = append(out, rest[:i+1]...)
		rest = rest[i+1:]
		flags = append([]cli.Flag{cli.HelpFlag}, cmd.Flags...)
		cmds = cmd.Subcommands
	}
	if complete {
		out = append(out, completionFlag)
	}
	return out
}

// hoistFlags moves the flags in args, each with its value, ahead of the
// other arguments, keeping the order of both. flags are the command's
// flags: they say which names take a value (as "--name value", "-n value"
// or "--name=value"; a bool flag takes none). "--" ends the flags: what
// follows it stays an argument, and the result keeps a "--" after the
// flags. A flag that flags does not name moves alone, so that v2 reports
// it. A flag that wants a value but ends args is put last with the flags
// before it and no arguments, so that v2 reports its missing value. An
// alias is written as the flag's name (-t as --tag), since v2 refuses two
// forms of one flag on a line (`-t a --tag b`).
func hoistFlags(flags []cli.Flag, args []string) []string {
	vals := takesValue(flags)
	primary := primaryNames(flags)
	var front, positional []string
	for i := 0; i < len(args); {
		a := args[i]
		if a == "--" {
			front = append(front, "--")
			return append(append(front, positional...), args[i+1:]...)
		}
		n := flagWidth(vals, a)
		switch {
		case n == 0:
			positional = append(positional, a)
			i++
			continue
		case i+n > len(args):
			return append(front, a)
		}
		front = append(front, canonical(primary, a))
		front = append(front, args[i+1:i+n]...)
		i += n
	}
	return append(front, positional...)
}

// primaryNames maps each alias of flags to its flag's name.
func primaryNames(flags []cli.Flag) map[string]string {
	m := map[string]string{}
	for _, f := range flags {
		names := f.Names()
		for _, alias := range names[1:] {
			m[alias] = names[0]
		}
	}
	return m
}

// canonical writes flag a (-n, --n, -n=v or --n=v) with its flag's name
// when n is an alias.
func canonical(primary map[string]string, a string) string {
	name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
	p, ok := primary[name]
	if !ok {
		return a
	}
	if hasValue {
		return "--" + p + "=" + value
	}
	return "--" + p
}

// firstArg is the index in args of the first argument that is neither a
// flag nor a flag's value, or -1 when there is none before "--" or the end.
func firstArg(vals map[string]bool, args []string) int {
	for i := 0; i < len(args); {
		if args[i] == "--" {
			return -1
		}
		n := flagWidth(vals, args[i])
		if n == 0 {
			return i
		}
		i += n
	}
	return -1
}

// flagWidth is how many arguments the flag a spans: 0 if a is not a flag
// (an argument, or "-" for stdin), 2 for a known flag that takes a value
// and does not hold it after "=", else 1. Like Go's flag package, it reads
// "-name" and "--name" alike.
func flagWidth(vals map[string]bool, a string) int {
	if len(a) < 2 || a[0] != '-' {
		return 0
	}
	name := strings.TrimPrefix(a[1:], "-")
	if strings.Contains(name, "=") || !vals[name] {
		return 1
	}
	return 2
}

// takesValue maps each name and alias of flags to whether it takes a value.
func takesValue(flags []cli.Flag) map[string]bool {
	vals := map[string]bool{}
	for _, f := range flags {
		v := true
		if tv, ok := f.(interface{ TakesValue() bool }); ok {
			v = tv.TakesValue()
		}
		for _, name := range f.Names() {
			vals[name] = v
		}
	}
	return vals
}

// findCommand is the command of cmds named name (or one of its aliases).
func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// isHelpCommand reports whether name is v2's help command, which every
// command has: its arguments name a command, and it has no flags.
func isHelpCommand(name string) bool { return name == "help" || name == "h" }
