//go:build integration

package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// cliBinary builds the buildsvc CLI once per test run.
func cliBinary(t testing.TB) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := exec.Command("mktemp", "-d").Output()
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(strings.TrimSpace(string(dir)), "buildsvc")
		out, err := exec.Command("go", "build", "-o", cliPath, "../cmd/cli").CombinedOutput()
		if err != nil {
			cliErr = errors.New(string(out))
		}
	})
	if cliErr != nil {
		t.Fatalf("build the CLI: %v", cliErr)
	}
	return cliPath
}

type cliRun struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI against a test's own server: without the stack's
// BUILDSVC_* settings (TLS, token), which belong to the stack's server.
func runCLI(t testing.TB, args ...string) cliRun {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv runs the CLI with env (KEY=VALUE) on top of the test's
// environment less its BUILDSVC_* variables.
func runCLIEnv(t testing.TB, env []string, args ...string) cliRun {
	t.Helper()
	cmd := exec.Command(cliBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDSVC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// The CLI shows BuildKit's progress on stderr and prints the pushed,
// pinned image as the last line on stdout; its exit code says what
// happened.
func TestCLI(t *testing.T) {
	_, addr := startServerAddr(t, nil)
	repo := newRepo(t, sampleFiles(t))
	tag := tagFor(t, "cli")

	r := runCLI(t, "build", "--server", addr, "--repo", repo.URL, "--commit", "main", "--tag", tag, "--progress", "plain")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	digest := tagDigest(t, tag)
	if !strings.HasSuffix(last, "@"+digest) {
		t.Errorf("last stdout line %q, want the image pinned to the registry's digest %s", last, digest)
	}
	if !strings.Contains(r.stderr, "go build") {
		t.Errorf("no go build step in the progress output:\n%s", r.stderr)
	}

	files := sampleFiles(t)
	files["main.go"] += "\nfunc oops() { return 1 }\n"
	broken := newRepo(t, files)
	usage := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"compile error", []string{"--repo", broken.URL, "--tag", tag}, 1, "too many return values"},
		{"file url", []string{"--repo", "file:///etc", "--tag", tag}, 2, "git_repo"},
		{"malformed tag", []string{"--repo", repo.URL, "--tag", "Bad::Tag"}, 2, "image_tag"},
		{"unknown commit", []string{"--repo", repo.URL, "--commit", "nope", "--tag", tag}, 2, "git_commit"},
		{"missing tag", []string{"--repo", repo.URL}, 2, "tag"},
		{"unknown flag", []string{"--repo", repo.URL, "--tag", tag, "--no-such-flag"}, 2, "no-such-flag"},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"build", "--server", addr, "--progress", "plain"}, tt.args...)
			r := runCLI(t, args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, want %d with %q in stderr:\n%s", r.code, tt.code, tt.want, r.stderr)
			}
		})
	}
}
