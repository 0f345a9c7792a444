package main

import (
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestHoistFlags(t *testing.T) {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}},
		&cli.BoolFlag{Name: "all", Aliases: []string{"a"}},
		&cli.StringSliceFlag{Name: "state", Aliases: []string{"s"}},
		&cli.IntFlag{Name: "limit"},
		&cli.DurationFlag{Name: "timeout"},
	}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", ""},
		{"flags first already", "--output json ID", "--output json ID"},
		{"flag after the argument", "ID --output json", "--output json ID"},
		{"alias, written as the name", "ID -o json", "--output json ID"},
		{"alias=value", "-o=json ID", "--output=json ID"},
		{"alias and name of one flag", "-s x ID --state y", "--state x --state y ID"},
		{"name=value", "ID --output=json", "--output=json ID"},
		{"one dash, long name", "ID -output json", "-output json ID"},
		{"bool takes no value", "ID --all json", "--all ID json"},
		{"bool alias", "ID -a", "--all ID"},
		{"bool=value", "ID --all=false", "--all=false ID"},
		{"order of flags and of arguments kept", "a --state x b --limit 3 c --state y", "--state x --limit 3 --state y a b c"},
		{"a value that looks like a flag", "ID --output -x", "--output -x ID"},
		{"value is an argument name", "--timeout 10m ID", "--timeout 10m ID"},
		{"-- ends the flags", "ID -- --output json", "-- ID --output json"},
		{"-- at the start", "-- --all ID", "-- --all ID"},
		{"flags before --", "ID --all -- -x", "--all -- ID -x"},
		{"a value of -- is a value", "--output -- ID", "--output -- ID"},
		{"- is an argument (stdin)", "- --output json", "--output json -"},
		{"unknown flag moves alone", "ID --nope json", "--nope ID json"},
		{"unknown flag with =", "ID --nope=1 --all", "--nope=1 --all ID"},
		{"missing value comes last, without the arguments", "ID --all --output", "--all --output"},
		{"missing value of an alias", "a b -o", "-o"},
		{"help flag is not special here", "ID --help", "--help ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hoistFlags(flags, strings.Fields(tt.in))
			if want := strings.Fields(tt.want); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
				t.Errorf("hoistFlags(%q) = %q, want %q", tt.in, got, want)
			}
		})
	}
}

// flagsFirst applies hoistFlags to the command the line runs, found by
// walking the app's commands.
func TestFlagsFirst(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"--version", "--version"},
		{"get b-1 --output json", "get --output json b-1"},
		{"builds get b-1 -o json --server=127.0.0.1:1", "builds get --output json --server=127.0.0.1:1 b-1"},
		{"builds get b-1 --help", "builds get --help b-1"},
		{"admin cleanup extra --output json", "admin cleanup --output json extra"},
		{"build x --detach --repo r --tag t", "build --detach --repo r --tag t x"},
		// --repo's value is not a command name.
		{"build --repo get --tag t", "build --repo get --tag t"},
		// The flags before a command's name are its parent's.
		{"--help builds get b-1 -o json", "--help builds get --output json b-1"},
		{"builds --nope get b-1", "builds --nope get b-1"},
		// An unknown command: the app's own flags come first.
		{"nope --version", "--version nope"},
		// The help command's line is its own.
		{"help get --output json", "help get --output json"},
		{"builds help get -o json", "builds help get -o json"},
		{"get b-1 -- --output json", "get -- b-1 --output json"},
		// The completion flag stays last, where v2 looks for it.
		{"get b-1 --ser --generate-bash-completion", "get --ser b-1 --generate-bash-completion"},
		{"--generate-bash-completion", "--generate-bash-completion"},
		{"builds get b-1 --output --generate-bash-completion", "builds get --output --generate-bash-completion"},
	}
	app := newApp(io.Discard, io.Discard)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := flagsFirst(app, append([]string{"buildsvc"}, strings.Fields(tt.in)...))
			want := append([]string{"buildsvc"}, strings.Fields(tt.want)...)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("flagsFirst(%q) = %q, want %q", tt.in, got[1:], want[1:])
			}
		})
	}
}

// Flags after the build id reach the command, for every command that takes
// one, nested or not.
func TestFlagsAfterArguments(t *testing.T) {
	info := &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_SUCCEEDED,
		CreateTime: timestamppb.Now(), Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git"}}
	f := &fakeServer{info: info, builds: []*buildv1.BuildInfo{info}}
	addr := f.start(t)
	for _, args := range [][]string{
		{"get", "b-1", "--output", "json", "--server", addr},
		{"builds", "get", "b-1", "-o", "json", "--server=" + addr},
		{"builds", "get", "--server", addr, "b-1", "-o=json"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, args...)
			if r.code != exitOK {
				t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got["buildId"] != "b-1" {
				t.Errorf("stdout is not b-1's record as JSON (%v):\n%s", err, r.stdout)
			}
		})
	}
	var gets []proto.Message
	for _, m := range f.calls() {
		if g, ok := m.(*buildv1.GetBuildRequest); ok {
			gets = append(gets, g)
		}
	}
	if len(gets) != 3 {
		t.Errorf("server got %d GetBuild calls, want 3: %v", len(gets), f.calls())
	}
}

func TestFlagsAnywhereUsage(t *testing.T) {
	tests := []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"get", "b-1", "--nope", "--server", "127.0.0.1:1"}, "flag provided but not defined: -nope"},
		{[]string{"get", "b-1", "--server", "127.0.0.1:1", "--output"}, "flag needs an argument: -output"},
		{[]string{"builds", "get", "b-1", "--output", "yaml", "--server", "127.0.0.1:1"}, `--output "yaml"`},
		{[]string{"admin", "cleanup", "extra", "--output", "json", "--server", "127.0.0.1:1"}, `unexpected argument "extra"`},
		{[]string{"bootstrap", "extra", "--no-git"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Nothing listens on the server's address: the CLI must stop
			// before any call.
			r := runCLI(t, tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want 2 and %q", r.code, r.stderr, tt.wantStderr)
			}
			if strings.Contains(r.stderr, "must come before") {
				t.Errorf("stderr %q still says flags must come first", r.stderr)
			}
		})
	}
}
