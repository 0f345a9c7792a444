package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Shell completion asks the binary itself: v2 answers a command line ending
// in --generate-bash-completion with the words that may come next (the
// commands, or the flags when the last word starts with "-"). The bash and
// zsh scripts pass the line typed so far; fish gets v2's static script.

// bashCompletion is the bash script; PROG is the program's name. It needs no
// bash-completion package.
const bashCompletion = `# bash completion for PROG. Load it with
#   source <(PROG completion bash)
# or install it as /etc/bash_completion.d/PROG.
_PROG_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ $cur == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _PROG_complete PROG
`

// zshCompletion is the zsh script; PROG is the program's name.
const zshCompletion = `#compdef PROG
# zsh completion for PROG. Load it with
#   source <(PROG completion zsh)
# after compinit, or put it in a directory of $fpath as _PROG.
_PROG() {
  local -a opts
  local cur=${words[CURRENT]}
  if [[ $cur == -* ]]; then
    opts=("${(@f)$(${words[1,CURRENT-1]} $cur --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[1,CURRENT-1]} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ -n ${opts[1]} ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _PROG PROG
`

// shells are the shells completion writes a script for.
var shells = []string{"bash", "zsh", "fish"}

func completionCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: strings.Join(shells, "|"),
		Description: "Prints a script that makes the shell complete buildsvc's commands and flags. The\n" +
			"bash and zsh scripts ask buildsvc itself what may come next, so they stay right\n" +
			"as commands change; the fish script lists them as they are now.",
		Action: runCompletion,
	},
		example{"source <(buildsvc completion bash)", "complete buildsvc in this bash (put the line in ~/.bashrc to keep it)"},
		example{"buildsvc completion zsh > \"${fpath[1]}/_buildsvc\"", "install the zsh completion (then restart zsh)"},
		example{"buildsvc completion fish > ~/.config/fish/completions/buildsvc.fish", "install the fish completion"},
	)
}

func runCompletion(cCtx *cli.Context) error {
	args := cCtx.Args().Slice()
	if len(args) != 1 {
		return usageError(cCtx, "want one shell, %s", strings.Join(shells, ", "))
	}
	prog := cCtx.App.Name
	var script string
	switch args[0] {
	case "bash":
		script = strings.ReplaceAll(bashCompletion, "PROG", prog)
	case "zsh":
		script = strings.ReplaceAll(zshCompletion, "PROG", prog)
	case "fish":
		var err error
		if script, err = cCtx.App.ToFishCompletion(); err != nil {
			return fmt.Errorf("fish completion: %w", err)
		}
	default:
		return usageError(cCtx, "unknown shell %q: want %s", args[0], strings.Join(shells, ", "))
	}
	_, err := fmt.Fprint(cCtx.App.Writer, script)
	return err
}
