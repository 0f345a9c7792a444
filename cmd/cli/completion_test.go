package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -F _buildsvc_complete buildsvc",
		"zsh":  "compdef _buildsvc buildsvc",
		"fish": "complete -c buildsvc",
	} {
		t.Run(shell, func(t *testing.T) {
			r := runCLI(t, "completion", shell)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "PROG") {
				t.Errorf("the %s script lacks %q (or has a PROG left):\n%s", shell, want, r.stdout)
			}
			if shell != "fish" && !strings.Contains(r.stdout, "--generate-bash-completion") {
				t.Errorf("the %s script does not ask buildsvc:\n%s", shell, r.stdout)
			}
		})
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		if r := runCLI(t, args...); r.code != exitUsage || r.stdout != "" {
			t.Errorf("%s: exit code %d, stdout %q; want 2 and nothing", args, r.code, r.stdout)
		}
	}
}

// completeCLI runs a completion request. v2's default completion reads the
// word before --generate-bash-completion from os.Args, not from the line
// given to Run, so os.Args is the line too while it runs.
func completeCLI(t *testing.T, args ...string) []string {
	t.Helper()
	args = append(args, "--generate-bash-completion")
	saved := os.Args
	os.Args = append([]string{"buildsvc"}, args...)
	defer func() { os.Args = saved }()
	r := runCLI(t, args...)
	if r.code != exitOK {
		t.Fatalf("%s: exit code %d\nstderr:\n%s", args, r.code, r.stderr)
	}
	return strings.Fields(r.stdout)
}

func TestGenerateBashCompletion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"build", "builds", "get", "bootstrap", "admin", "version", "completion"}},
		{[]string{"builds"}, []string{"ls", "get", "logs", "watch", "cancel"}},
		{[]string{"admin"}, []string{"cleanup"}},
		{[]string{"-"}, []string{"--version", "--help"}},
		{[]string{"builds", "get", "--o"}, []string{"--output"}},
		// After an argument too: flags may come anywhere.
		{[]string{"get", "b-1", "--ser"}, []string{"--server"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got := completeCLI(t, tt.args...)
			for _, w := range tt.want {
				if !hasWord(got, w) {
					t.Errorf("completions %q lack %q", got, w)
				}
			}
			if hasWord(got, "--generate-bash-completion") {
				t.Errorf("completions %q offer the completion flag", got)
			}
		})
	}
}

// The bash script passes the words before the cursor, and the one at it
// when it is a flag, to the program with --generate-bash-completion last,
// and offers what it prints that matches the word at the cursor.
func TestBashCompletionScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script := filepath.Join(t.TempDir(), "buildsvc.bash")
	if err := os.WriteFile(script, []byte(runCLI(t, "completion", "bash").stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		words     string // COMP_WORDS, the cursor on the last
		wantArgs  string // what buildsvc is asked
		wantReply string
	}{
		{"buildsvc bu", "--generate-bash-completion", "build builds"},
		{"buildsvc builds ''", "builds --generate-bash-completion", "ls get"},
		{"buildsvc builds get --o", "builds get --o --generate-bash-completion", "--output"},
	}
	for _, tt := range tests {
		t.Run(tt.words, func(t *testing.T) {
			// buildsvc is a function that records its arguments and
			// answers as the binary does.
			prog := `asked=$2
buildsvc() { printf '%s\n' "$*" >"$asked"
  case "$*" in
  *--o*) echo --output ;;
  builds*) printf 'ls\nget\n' ;;
  *) printf 'build\nbuilds\nbootstrap\nadmin\n' ;;
  esac
}
source "$1"
COMP_WORDS=(` + tt.words + `)
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_buildsvc_complete
echo "${COMPREPLY[*]}"`
			asked := filepath.Join(t.TempDir(), "args")
			cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script, asked)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, stderr.String())
			}
			b, err := os.ReadFile(asked)
			if err != nil {
				t.Fatalf("buildsvc was not asked: %v", err)
			}
			if got := strings.TrimSpace(string(b)); got != tt.wantArgs {
				t.Errorf("buildsvc was asked %q, want %q", got, tt.wantArgs)
			}
			if got := strings.TrimSpace(string(out)); got != tt.wantReply {
				t.Errorf("COMPREPLY = %q, want %q", got, tt.wantReply)
			}
		})
	}
}

func hasWord(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
