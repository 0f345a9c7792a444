package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// clearEnv unsets every BUILDSVC_ variable for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix) {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	for _, o := range options {
		for _, k := range o.envAliases {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// runApp runs the server's command line with args; instead of serving it
// returns the configuration it would have served with.
func runApp(t *testing.T, args ...string) (cfg config, stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	served := false
	app := newApp(&out, &errOut, func(_ context.Context, c config, _ *slog.Logger) error {
		cfg, served = c, true
		return nil
	})
	err = app.RunContext(context.Background(), append([]string{"buildsvc-server"}, args...))
	if err == nil && !served && !strings.Contains(strings.Join(args, " "), "--print-config") {
		t.Fatal("the app neither served nor failed")
	}
	return cfg, out.String(), err
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const sampleFile = `# a config file
listen: 127.0.0.1:1234      # file only
queue-size: 5               # overridden by env
log-level: warn             # overridden by env and flag
cleanup-keep-storage: 10GB  # file only
history-max-age: 48h
allow-insecure-git: true
goproxy: https://alice:s3cret@proxy.example,direct
metrics-listen:             # empty: metrics off
`

// Flags beat env vars, env vars beat the file, the file beats defaults.
func TestPrecedence(t *testing.T) {
	clearEnv(t)
	file := writeFile(t, sampleFile)
	t.Setenv("BUILDSVC_QUEUE_SIZE", "7")
	t.Setenv("BUILDSVC_LOG_LEVEL", "error")
	t.Setenv("BUILDSVC_CLEANUP_INTERVAL", "10m")
	cfg, _, err := runApp(t, "--config", file, "--log-level", "debug", "--buildkit-addr", "unix:///run/bk.sock")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"listen (file)", cfg.Listen, "127.0.0.1:1234"},
		{"queue-size (env over file)", cfg.Server.QueueSize, 7},
		{"log-level (flag over env and file)", cfg.LogLevel, slog.LevelDebug},
		{"cleanup-interval (env)", cfg.Server.Cleanup.Interval, 10 * time.Minute},
		{"cleanup-keep-storage (file, binary units)", cfg.Server.Cleanup.KeepStorage, int64(10 << 30)},
		{"history-max-age (file)", cfg.Server.Cleanup.HistoryMaxAge, 48 * time.Hour},
		{"allow-insecure-git (file)", cfg.Server.AllowInsecureGit, true},
		{"metrics-listen (file, empty)", cfg.MetricsListen, ""},
		{"buildkit-addr (flag)", cfg.BuildKit.Address, "unix:///run/bk.sock"},
		{"max-concurrent-builds (default)", cfg.Server.MaxConcurrent, 4},
		{"cleanup-keep-duration (default)", cfg.Server.Cleanup.KeepDuration, 336 * time.Hour},
		{"history-max-builds (default)", cfg.Server.Cleanup.HistoryMaxBuilds, 10000},
		{"log-cap (default)", cfg.Server.LogCap, int64(32 << 20)},
		{"data-dir (default)", cfg.DataDir, "/var/lib/buildsvc"},
		{"goproxy (file, unmasked for use)", cfg.Server.GoProxy, "https://alice:s3cret@proxy.example,direct"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	// BUILDSVC_CONFIG names the file too.
	t.Setenv("BUILDSVC_CONFIG", file)
	cfg, _, err = runApp(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:1234" {
		t.Errorf("with BUILDSVC_CONFIG, listen = %s", cfg.Listen)
	}
}

// --print-config shows every value, where it came from, and no secret.
func TestPrintConfig(t *testing.T) {
	clearEnv(t)
	file := writeFile(t, sampleFile)
	t.Setenv("BUILDSVC_QUEUE_SIZE", "7")
	_, out, err := runApp(t, "--config", file, "--log-level", "debug", "--print-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"listen: 127.0.0.1:1234 # file\n",
		"queue-size: 7 # env BUILDSVC_QUEUE_SIZE\n",
		"log-level: debug # flag\n",
		"cleanup-keep-storage: 10GB # file\n",
		"max-concurrent-builds: 4 # default\n",
		"allow-insecure-git: true # file\n",
		"metrics-listen: \"\" # file\n",
		"goproxy: https://alice:xxxxx@proxy.example,direct # file\n",
		"buildkitd-root: \"\" # default (the buildkitd config's root, else <data-dir>/buildkit)\n",
		"config file " + file,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("the GOPROXY password was printed:\n%s", out)
	}
	for _, o := range options {
		if !strings.Contains(out, "\n"+o.name+": ") {
			t.Errorf("option %s is not printed", o.name)
		}
	}

	// The output is a config file that gives the same configuration (but
	// for the masked password).
	clearEnv(t)
	cfg1, _, err := runApp(t, "--config", file, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BUILDSVC_QUEUE_SIZE", "7")
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	cfg2, _, err := runApp(t, "--config", writeFile(t, out))
	if err != nil {
		t.Fatalf("the printed config does not load: %v\n%s", err, out)
	}
	cfg1.Server.QueueSize = 7
	cfg2.Server.GoProxy = cfg1.Server.GoProxy
	if !reflect.DeepEqual(cfg1, cfg2) {
		t.Errorf("printed config loads as\n%+v\nwant\n%+v", cfg2, cfg1)
	}
}

// Bad values are refused with exit code 2, naming the option and where
// the value came from.
func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, file string
		env        map[string]string
		args       []string
		want       string
	}{
		{name: "unknown key", file: "listen: x\nlisten-addr: y\n", want: `server.yaml:2: unknown key "listen-addr"`},
		{name: "duplicate key", file: "listen: x\nlisten: y\n", want: `"listen" is given twice`},
		{name: "not a mapping", file: "- listen\n", want: "want a mapping"},
		{name: "list value", file: "listen: [a, b]\n", want: "listen: want a single value"},
		{name: "not YAML", file: "listen: [\n", want: "server.yaml"},
		{name: "config key in file", file: "config: other.yaml\n", want: `unknown key "config"`},
		{name: "bad duration from env", env: map[string]string{"BUILDSVC_CLEANUP_INTERVAL": "1 hour"}, want: `cleanup-interval "1 hour" (from env BUILDSVC_CLEANUP_INTERVAL): want a duration`},
		{name: "duration without unit from file", file: "shutdown-grace: 30\n", want: `shutdown-grace "30" (from file): want a duration`},
		{name: "bad size", args: []string{"--cleanup-keep-storage", "lots"}, want: `cleanup-keep-storage "lots" (from flag): want a size`},
		{name: "negative int", file: "history-max-builds: -1\n", want: "history-max-builds \"-1\" (from file): must not be negative"},
		{name: "bad bool from env", env: map[string]string{"BUILDSVC_ALLOW_INSECURE_GIT": "sure"}, want: "want true or false"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: "log-format"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, want: "log-level"},
		{name: "bad buildkit address", args: []string{"--buildkit-addr", "http://x"}, want: "buildkit-addr"},
		{name: "missing file", args: []string{"--config", "/nonexistent/server.yaml"}, want: "no such file"},
		{name: "argument", args: []string{"serve"}, want: `unexpected argument "serve"`},
		{name: "registry credentials without a dir", args: []string{"--registry-credentials", "push"}, want: "registry-credentials"},
		{name: "registry credentials twice", args: []string{"--registry-credentials", "a=/x,a=/y"}, want: "registry-credentials"},
		{name: "unknown ulimit", args: []string{"--build-ulimits", "files=10"}, want: "build-ulimits"},
		{name: "ulimit soft over hard", args: []string{"--build-ulimits", "nofile=10:5"}, want: "build-ulimits"},
		{name: "ulimit not a number", args: []string{"--build-ulimits", "nofile=many"}, want: "build-ulimits"},
		{name: "tls key without cert", args: []string{"--tls-key", "k.pem"}, want: "tls-cert"},
		{name: "client CA without TLS", args: []string{"--tls-client-ca", "ca.pem"}, want: "tls-client-ca"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, _, err := runApp(t, args...)
			var ec cli.ExitCoder
			if !errors.As(err, &ec) || ec.ExitCode() != 2 {
				t.Fatalf("err = %v, want exit code 2", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBuildUlimits(t *testing.T) {
	clearEnv(t)
	cfg, _, err := runApp(t, "--build-ulimits", "nofile=4096:8192, nproc=512", "--build-cgroup-parent", "buildsvc.slice")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.RegistryCredentials != nil {
		t.Errorf("registry credentials %v without the option", cfg.Server.RegistryCredentials)
	}
	got := fmt.Sprint(cfg.Server.Ulimits, " ", cfg.Server.CgroupParent)
	if want := "[{nofile 4096 8192} {nproc 512 512}] buildsvc.slice"; got != want {
		t.Errorf("ulimits, cgroup parent = %s, want %s", got, want)
	}
}

func TestMaskURLPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"direct":                          "direct",
		"https://proxy.golang.org,direct": "https://proxy.golang.org,direct",
		"https://u:p@a.example|https://b.example,off": "https://u:xxxxx@a.example|https://b.example,off",
		"https://token@a.example":                     "https://xxxxx@a.example",
	} {
		if got := maskURLPasswords(in); got != want {
			t.Errorf("maskURLPasswords(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every option's default is valid.
func TestDefaultsParse(t *testing.T) {
	clearEnv(t)
	cfg, _, err := runApp(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BuildKit.Address != "" || cfg.Managed.Binary != "buildkitd" || cfg.MetricsListen != "" {
		t.Errorf("defaults: %+v", cfg)
	}
}
