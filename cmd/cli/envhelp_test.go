package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// BUILDSVC_SERVER names the server, and wins over the older
// BUILD_SERVER_ADDR.
func TestServerEnvNames(t *testing.T) {
	info := &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_SUCCEEDED, CreateTime: timestamppb.Now()}
	addr := (&fakeServer{info: info, builds: []*buildv1.BuildInfo{info}}).start(t)
	for _, env := range []map[string]string{
		{"BUILDSVC_SERVER": addr, "BUILD_SERVER_ADDR": ""},
		{"BUILDSVC_SERVER": addr, "BUILD_SERVER_ADDR": "127.0.0.1:1"},
		{"BUILDSVC_SERVER": "", "BUILD_SERVER_ADDR": addr},
	} {
		for k, v := range env {
			t.Setenv(k, v)
			if v == "" {
				os.Unsetenv(k) // v2 takes an env var that is set, even to ""
			}
		}
		if r := runCLI(t, "get", "b-1"); r.code != exitOK {
			t.Errorf("with %v: exit code %d\nstderr:\n%s", env, r.code, r.stderr)
		}
	}
}

// BUILDKIT_HOST, the variable buildctl reads, gives bootstrap its
// --buildkit-addr.
func TestBootstrapBuildkitHost(t *testing.T) {
	for _, k := range []string{"BUILDKIT_HOST", "BUILDKIT_ADDR", "BUILDER_IMAGE", "BASE_IMAGE"} {
		t.Setenv(k, "")
	}
	if r := runCLI(t, "bootstrap"); r.code != exitUsage || !strings.Contains(r.stderr, "--buildkit-addr is required") {
		t.Errorf("without an address: exit code %d, stderr %q; want 2 and --buildkit-addr is required", r.code, r.stderr)
	}
	t.Setenv("BUILDKIT_HOST", "unix:///nonexistent/buildkitd.sock")
	if r := runCLI(t, "bootstrap"); r.code != exitUsage || !strings.Contains(r.stderr, "--builder-image is required") {
		t.Errorf("with BUILDKIT_HOST: exit code %d, stderr %q; want 2 and the next flag missing", r.code, r.stderr)
	}
}

// ownCommands are the command lines of the commands of this file's owner.
var ownCommands = [][]string{{}, {"bootstrap"}, {"admin"}, {"admin", "cleanup"}, {"completion"}, {"version"}}

// The help of each command ends with two or three examples, each a comment
// and a command line; those that need no server run.
func TestOwnHelpExamples(t *testing.T) {
	for _, cmd := range ownCommands {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			r := runCLI(t, append(cmd, "--help")...)
			if r.code != exitOK {
				t.Fatalf("--help: exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			_, section, ok := strings.Cut(r.stdout, "\nEXAMPLES:\n")
			if !ok {
				t.Fatalf("no EXAMPLES section at the end:\n%s", r.stdout)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(section), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					lines = append(lines, l)
				}
			}
			if n := len(lines) / 2; len(lines)%2 != 0 || n < 2 || n > 3 {
				t.Fatalf("want 2 or 3 examples of a comment and a line each:\n%s", section)
			}
			for i := 0; i < len(lines); i += 2 {
				comment, line := lines[i], lines[i+1]
				if !strings.HasPrefix(comment, "# ") || !strings.Contains(line, "buildsvc ") {
					t.Errorf("example %q, %q: want a # comment and a buildsvc command line", comment, line)
				}
				line, _, _ = strings.Cut(line, " >")
				line, _, _ = strings.Cut(line, " |")
				words := strings.Fields(line)
				if len(cmd) == 0 || words[0] != "buildsvc" || (cmd[0] != "version" && cmd[0] != "completion") || strings.ContainsAny(line, `'"`) {
					continue
				}
				if r := runCLI(t, words[1:]...); r.code != exitOK || r.stdout == "" {
					t.Errorf("example %q: exit code %d, stdout %q\nstderr:\n%s", line, r.code, r.stdout, r.stderr)
				}
			}
		})
	}
}

// Every flag of these commands that takes a value names it in its help
// (--server ADDRESS), and the env vars show.
func TestOwnHelpPlaceholders(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, cmd := range ownCommands {
		flags, cmds := app.Flags, app.Commands
		for _, name := range cmd {
			c := findCommand(cmds, name)
			flags, cmds = c.Flags, c.Subcommands
		}
		for _, f := range flags {
			if tv, ok := f.(cli.DocGenerationFlag); ok && tv.TakesValue() && !strings.Contains(tv.GetUsage(), "`") {
				t.Errorf("%s --%s: no `PLACEHOLDER` in its usage %q", strings.Join(cmd, " "), f.Names()[0], tv.GetUsage())
			}
		}
	}
	for _, tt := range []struct {
		cmd  []string
		want []string
	}{
		{[]string{"bootstrap"}, []string{"--buildkit-addr ADDRESS", "[$BUILDKIT_HOST, $BUILDKIT_ADDR]", "--builder-image IMAGE", "--goroot DIR", "--progress MODE"}},
		{[]string{"admin", "cleanup"}, []string{"--server ADDRESS", "[$BUILDSVC_SERVER, $BUILD_SERVER_ADDR]", "--output FORMAT", "--token-file FILE"}},
		{[]string{"completion"}, []string{"buildsvc completion [command options] bash|zsh|fish"}},
		{nil, []string{"--version"}},
	} {
		r := runCLI(t, append(tt.cmd, "--help")...)
		for _, want := range tt.want {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s --help lacks %q:\n%s", strings.Join(tt.cmd, " "), want, r.stdout)
			}
		}
	}
}
