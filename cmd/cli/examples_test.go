package main

import (
	"strings"
	"testing"
)

// helpExamples is the command lines of the EXAMPLES section that ends a
// command's help, each with its comment.
func helpExamples(t *testing.T, help string) [][2]string {
	t.Helper()
	_, section, ok := strings.Cut(help, "\nEXAMPLES:\n")
	if !ok {
		t.Fatalf("the help has no EXAMPLES section:\n%s", help)
	}
	var out [][2]string
	lines := strings.Split(strings.TrimRight(section, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "":
		case strings.HasPrefix(l, "# ") && i+1 < len(lines):
			out = append(out, [2]string{l, strings.TrimSpace(lines[i+1])})
			i++
		default:
			t.Errorf("EXAMPLES: line %q is neither a comment followed by a command line nor blank", l)
		}
	}
	return out
}

// shellWords splits a command line as sh does, for the single quotes of
// the examples: no escapes, no double quotes.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// TestHelpExamples: the help of each builds command ends with two or three
// examples, and each runs (up to its first pipe) against a fake server.
func TestHelpExamples(t *testing.T) {
	builds := historyBuilds()
	h := historyFake{&fakeServer{builds: builds, events: successEvents()}}
	t.Setenv("BUILD_SERVER_ADDR", h.start(t))
	for _, cmd := range [][]string{{"builds", "ls"}, {"builds", "get"}, {"get"}, {"builds", "logs"}, {"builds", "watch"}, {"builds", "cancel"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			r := runCLI(t, append(cmd, "--help")...)
			if r.code != exitOK {
				t.Fatalf("--help: exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			examples := helpExamples(t, r.stdout)
			if n := len(examples); n < 2 || n > 3 {
				t.Errorf("%d examples, want 2 or 3:\n%s", n, r.stdout)
			}
			for _, ex := range examples {
				line, _, _ := strings.Cut(ex[1], " | ")
				words := shellWords(t, line)
				// The examples of get are builds get's, the same command;
				// one of cancel's feeds it from ls.
				name := cmd[len(cmd)-1]
				if len(words) < 2 || words[0] != "buildsvc" || !strings.Contains(ex[1], "buildsvc builds "+name) {
					t.Errorf("example %q is not a builds %s command line", ex[1], name)
					continue
				}
				r := runCLI(t, words[1:]...)
				if r.code != exitOK {
					t.Errorf("example %q (%s): exit code %d\nstderr:\n%s", line, ex[0], r.code, r.stderr)
				}
			}
		})
	}
}

// TestHelpPlaceholders: the placeholders of the builds commands' flags and
// arguments name their values.
func TestHelpPlaceholders(t *testing.T) {
	for _, tt := range []struct {
		cmd  []string
		want []string
	}{
		{[]string{"builds", "ls"}, []string{"--filter KEY=VALUE, -f KEY=VALUE", "--format TEMPLATE", "--state STATE", "--repo URL", "--limit N", "--page-token TOKEN", "--output FORMAT"}},
		{[]string{"builds", "get"}, []string{"buildsvc builds get [command options] [BUILD_ID|PREFIX|last]"}},
		{[]string{"builds", "logs"}, []string{"[BUILD_ID|PREFIX|last]", "--follow, -f", "--raw"}},
		{[]string{"builds", "watch"}, []string{"[BUILD_ID|PREFIX|last]", "--progress MODE"}},
		{[]string{"builds", "cancel"}, []string{"[command options] BUILD_ID|PREFIX|last"}},
	} {
		r := runCLI(t, append(tt.cmd, "--help")...)
		for _, want := range tt.want {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s --help lacks %q:\n%s", strings.Join(tt.cmd, " "), want, r.stdout)
			}
		}
	}
}
