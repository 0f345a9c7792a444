package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// --version prints the build's version block and serves nothing, even when
// the configuration would not parse.
func TestVersionFlag(t *testing.T) {
	clearEnv(t)
	t.Setenv("BUILDSVC_QUEUE_SIZE", "many")
	var out, errOut bytes.Buffer
	app := newApp(&out, &errOut, func(context.Context, config, *slog.Logger) error {
		t.Error("--version served")
		return nil
	})
	if err := app.RunContext(context.Background(), []string{"buildsvc-server", "--version"}); err != nil {
		t.Fatalf("--version: %v\nstderr:\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	fields := map[string]string{}
	for _, l := range lines {
		name, value, _ := strings.Cut(l, " ")
		fields[name] = strings.TrimSpace(value)
	}
	bk := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/moby/buildkit" {
				bk = d.Version
			}
		}
	}
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "buildsvc-server ") || fields["commit"] == "" ||
		!strings.HasPrefix(fields["go"], runtime.Version()+" ") || fields["buildkit"] != bk {
		t.Errorf("--version printed\n%s\nwant buildsvc-server, commit, go %s and buildkit %s lines", out.String(), runtime.Version(), bk)
	}
}

// clearAliases unsets the options' env aliases for the test, as clearEnv
// does the BUILDSVC_ variables.
func clearAliases(t *testing.T) {
	t.Helper()
	for _, o := range options {
		for _, a := range o.envAliases {
			t.Setenv(a, "")
			os.Unsetenv(a)
		}
	}
}

// BUILDKIT_HOST sets buildkit-addr, below BUILDSVC_BUILDKIT_ADDR and the flag.
func TestEnvAlias(t *testing.T) {
	clearEnv(t)
	clearAliases(t)
	t.Setenv("BUILDKIT_HOST", "tcp://bk.example:1234")
	cfg, _, err := runApp(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BuildKit.Address != "tcp://bk.example:1234" {
		t.Errorf("with BUILDKIT_HOST, buildkit-addr = %q", cfg.BuildKit.Address)
	}
	_, out, err := runApp(t, "--print-config")
	if err != nil || !strings.Contains(out, "buildkit-addr: tcp://bk.example:1234 # env BUILDKIT_HOST\n") {
		t.Errorf("--print-config (%v) does not say buildkit-addr comes from BUILDKIT_HOST:\n%s", err, out)
	}

	t.Setenv("BUILDSVC_BUILDKIT_ADDR", "unix:///run/bk.sock")
	if cfg, _, err = runApp(t); err != nil || cfg.BuildKit.Address != "unix:///run/bk.sock" {
		t.Errorf("with both env vars, buildkit-addr = %q (%v), want BUILDSVC_BUILDKIT_ADDR's", cfg.BuildKit.Address, err)
	}
	if cfg, _, err = runApp(t, "--buildkit-addr", "unix:///run/flag.sock"); err != nil || cfg.BuildKit.Address != "unix:///run/flag.sock" {
		t.Errorf("with the flag, buildkit-addr = %q (%v), want the flag's", cfg.BuildKit.Address, err)
	}
}

// docs/operations.md names every env alias in its option's row, and --help
// lists it.
func TestEnvAliasesDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var help bytes.Buffer
	app := newApp(&help, &help, nil)
	if err := app.RunContext(context.Background(), []string{"buildsvc-server", "--help"}); err != nil {
		t.Fatal(err)
	}
	for _, o := range options {
		for _, a := range o.envAliases {
			row := ""
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "| `"+o.name+"` |") {
					row = line
				}
			}
			if !strings.Contains(row, "`"+a+"`") {
				t.Errorf("docs/operations.md: the row of %s does not name %s: %q", o.name, a, row)
			}
			if !strings.Contains(help.String(), "$"+a) {
				t.Errorf("--help does not list %s for --%s", a, o.name)
			}
		}
	}
}
