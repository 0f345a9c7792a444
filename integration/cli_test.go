//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
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

// Ctrl-C during `buildsvc build` cancels the build on the server: the real
// CLI, sent SIGINT while its build waits inside go build's module download
// (on a proxy that never answers), says it is cancelling, waits for the
// build to end and exits 130; the build's record is CANCELLED.
//
// The server is the test's own, not the stack's: only a server of the
// test's can be given the hanging proxy, and a build on the stack's server
// ends too soon to be interrupted reliably.
func TestCLICtrlCCancels(t *testing.T) {
	p := newHangingProxy(t)
	c, addr := startServerAddr(t, p.configure)
	repo := hangingRepo(t)

	cmd := exec.Command(cliBinary(t), "build", "--server", addr, "--repo", repo.URL, "--commit", "main",
		"--tag", tagFor(t, "x"), "--progress", "plain")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDSVC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout bytes.Buffer
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("CLI stderr:\n%s", stderr.String())
		}
	})

	// The id, from the line that says the build started; then the build
	// must reach go build's download and be BUILDING.
	started := regexp.MustCompile(`(?m)^build (\S+): started$`)
	var id string
	for deadline := time.Now().Add(20 * time.Second); id == ""; time.Sleep(10 * time.Millisecond) {
		if m := started.FindStringSubmatch(stderr.String()); m != nil {
			id = m[1]
		} else if time.Now().After(deadline) {
			t.Fatal("the CLI did not say which build started")
		}
	}
	p.waitReached(t)
	if info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id}); err != nil || info.State != buildv1.BuildState_BUILD_STATE_BUILDING {
		t.Fatalf("before the Ctrl-C: build %s is %v (%v), want BUILDING", id, info.GetState(), err)
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the CLI did not exit within 20s of the Ctrl-C")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want exit code 130", err)
	}
	out := stderr.String()
	for _, want := range []string{
		"cancelling build " + id + " (Ctrl-C again to leave it running)",
		"build " + id + ": cancelled",
		"error: build " + id + " cancelled; 'buildsvc builds logs " + id + "' shows its logs\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil || info.State != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Errorf("after the Ctrl-C: build %s is %v (%v), want CANCELLED", id, info.GetState(), err)
	}
}

// Against the stack's secured server (TLS, the dev tenant's token from the
// environment): with --output json, stdout is the build's events, one
// BuildEvent a line, seq 1, 2, ... of one build, ending with the result;
// with --progress rawjson, stderr is JSON lines, the first the command's
// own naming the build that started.
func TestCLIStackServerJSON(t *testing.T) {
	sec := loadStackSecurity(t)
	repo := newRepo(t, sampleFiles(t))
	r := runCLIEnv(t, []string{"BUILDSVC_TLS_CA=" + sec.ca, "BUILDSVC_TOKEN_FILE=" + sec.devToken},
		"build", "--server", sec.addr, "--repo", repo.URL, "--commit", "main", "--tag", tagFor(t, "json"),
		"--progress", "rawjson", "--output", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	var id string
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	for i, line := range lines {
		e := &buildv1.BuildEvent{}
		if err := protojson.Unmarshal([]byte(line), e); err != nil {
			t.Fatalf("stdout line %d is not a BuildEvent: %v\n%s", i+1, err, line)
		}
		if i == 0 {
			id = e.BuildId
		}
		if e.BuildId != id || e.Seq != uint64(i+1) {
			t.Errorf("stdout line %d: build %q seq %d, want build %q seq %d", i+1, e.BuildId, e.Seq, id, i+1)
		}
		if i == len(lines)-1 && !strings.Contains(e.GetResult().GetImage(), "@sha256:") {
			t.Errorf("the last event is not the result: %s", line)
		}
	}
	stderr := strings.Split(strings.TrimSpace(r.stderr), "\n")
	var first struct{ BuildID, Message string }
	if err := json.Unmarshal([]byte(stderr[0]), &first); err != nil || first.BuildID != id || first.Message != "build "+id+": started" {
		t.Errorf("first stderr line %q, want the start of build %s", stderr[0], id)
	}
	for i, line := range stderr {
		if !json.Valid([]byte(line)) {
			t.Errorf("stderr line %d is not JSON: %q", i+1, line)
		}
	}
}
