//go:build integration && linux

package buildkitd

// Tests of the Launcher against a real buildkitd. Run them (as root, with
// runc on PATH) with
//
//	BUILDKITD_BIN=/work/main/.stack/bin/buildkitd \
//	BUILDKITD_CONFIG=/work/main/.stack/buildkitd.toml \
//	go test -tags integration -run Ephemeral -v ./buildkitd/
//
// BUILDKITD_CONFIG is optional (default: a minimal OCI-worker config).
// BUILDKITD_CA_BUNDLE (optional) is a PEM file for the system CA bundle
// test, e.g. /work/main/.stack/buildkit-ca-bundle.crt.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/session"
)

// minimalConfig is the base config when BUILDKITD_CONFIG is unset.
const minimalConfig = `
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
[worker.containerd]
  enabled = false
`

// integrationLauncher makes a Launcher on the real buildkitd, with each of
// edits applied to its config, or skips.
func integrationLauncher(t *testing.T, stateDir string, edits ...func(*LauncherConfig)) *Launcher {
	t.Helper()
	bin := os.Getenv("BUILDKITD_BIN")
	if bin == "" {
		t.Skip("BUILDKITD_BIN is unset: set it to a buildkitd binary (e.g. /work/main/.stack/bin/buildkitd) to run the Launcher's integration tests")
	}
	if os.Geteuid() != 0 {
		t.Skip("buildkitd with the OCI worker needs root")
	}
	cfg := os.Getenv("BUILDKITD_CONFIG")
	if cfg == "" {
		cfg = filepath.Join(t.TempDir(), "base.toml")
		if err := os.WriteFile(cfg, []byte(minimalConfig), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lc := LauncherConfig{
		StateDir:     stateDir,
		Binary:       bin,
		ConfigFile:   cfg,
		ReadyTimeout: 30 * time.Second,
		StopTimeout:  10 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, edit := range edits {
		edit(&lc)
	}
	l, err := NewLauncher(lc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("launcher close: %v", err)
		}
	})
	return l
}

// testWriter sends the launcher's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// shortDir is a state directory with a short path (the socket path is
// bounded).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "eph")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// assertGone checks that nothing of an instance is left: no process, no
// mount at or under its directory, no directory.
func assertGone(t *testing.T, pid int, dir string) {
	t.Helper()
	if processAlive(pid) {
		t.Errorf("buildkitd pid %d still runs", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill -0 %d: %v, want ESRCH", pid, err)
	}
	f, err := os.Open(mountInfoPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	points, err := parseMountPoints(f)
	if err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(points, dir); len(m) > 0 {
		t.Errorf("still mounted under %s: %v", dir, m)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance dir %s: stat err %v, want not exist", dir, err)
	}
}

func TestEphemeralTwoInstancesAndSolve(t *testing.T) {
	l := integrationLauncher(t, shortDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var insts [2]*Instance
	var errs [2]error
	var wg sync.WaitGroup
	for n := range insts {
		wg.Go(func() { insts[n], errs[n] = l.Start(ctx, "two") })
	}
	wg.Wait()
	for n, err := range errs {
		if err != nil {
			t.Fatalf("start %d: %v", n, err)
		}
	}
	a, b := insts[0], insts[1]
	if a.Root() == b.Root() || a.Address() == b.Address() || a.Pid() == b.Pid() {
		t.Fatalf("instances share state: roots %s %s, addresses %s %s, pids %d %d", a.Root(), b.Root(), a.Address(), b.Address(), a.Pid(), b.Pid())
	}
	for _, i := range insts {
		t.Logf("instance %s pid %d ready after %s", i.Dir(), i.Pid(), i.StartDuration().Round(time.Millisecond))
		if i.StartDuration() <= 0 {
			t.Errorf("StartDuration = %s", i.StartDuration())
		}
		c, err := i.Client(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := c.ListWorkers(ctx)
		if err != nil || len(ws) == 0 {
			t.Fatalf("ListWorkers on %s: %d workers, %v", i.Address(), len(ws), err)
		}
		c.Close()
		if !strings.HasPrefix(i.Address(), "unix://"+i.Dir()+"/") || filepath.Dir(i.Root()) != i.Dir() {
			t.Errorf("address %s, root %s: want both in %s", i.Address(), i.Root(), i.Dir())
		}
		if ents, err := os.ReadDir(i.Root()); err != nil || len(ents) == 0 {
			t.Errorf("root %s: %d entries, %v; want buildkitd's state", i.Root(), len(ents), err)
		}
	}

	// A tiny solve: a file on scratch, exported to nothing.
	c, err := a.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	def, err := llb.Scratch().File(llb.Mkfile("/hello", 0o644, []byte("hi\n"))).Marshal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := c.Solve(ctx, def, client.SolveOpt{}, nil); err != nil {
		t.Fatalf("solve on %s: %v\n%s", a.Address(), err, logTail(a.LogFile(), 40))
	}
	t.Logf("solve took %s", time.Since(t0).Round(time.Millisecond))
	c.Close()

	for _, i := range insts {
		t0 := time.Now()
		if err := i.Close(ctx); err != nil {
			t.Fatalf("close %s: %v", i.Dir(), err)
		}
		t.Logf("instance %s closed in %s", i.Dir(), time.Since(t0).Round(time.Millisecond))
		assertGone(t, i.Pid(), i.Dir())
		select {
		case <-i.Exited():
		default:
			t.Error("Exited not closed after Close")
		}
		if err := i.Close(ctx); err != nil {
			t.Errorf("second close: %v", err)
		}
	}
	if dirs, _ := leftoverDirs(l.StateDir()); len(dirs) != 0 {
		t.Errorf("state dir holds %v after every instance closed", dirs)
	}
}

// TestEphemeralLeftovers: a Launcher that died without closing its
// instance (its lock released, its daemon running, a mount under its root)
// is cleaned up by the next Launcher on the same state directory.
func TestEphemeralLeftovers(t *testing.T) {
	stateDir := shortDir(t)
	crashed := integrationLauncher(t, stateDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := crashed.Start(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	// As if a build container's snapshot were still mounted.
	mnt := filepath.Join(old.Root(), "leftover-mount")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	// The crash: the lock goes with the process; nothing else is cleaned.
	crashed.lock.Close()

	t0 := time.Now()
	integrationLauncher(t, stateDir)
	t.Logf("leftover removed in %s", time.Since(t0).Round(time.Millisecond))
	<-old.Exited() // killed by the new Launcher, reaped by this process
	assertGone(t, old.Pid(), old.Dir())
}

func TestEphemeralBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.toml")
	bad := "[worker.oci]\n  enabled = true\n  snapshotter = \"nosuch\"\n[worker.containerd]\n  enabled = false\n"
	if err := os.WriteFile(cfg, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := shortDir(t)
	l := integrationLauncher(t, stateDir, func(c *LauncherConfig) { c.ConfigFile = cfg })
	_, err := l.Start(context.Background(), "bad")
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("Start: %v, want a *StartError", err)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(se.LogTail, `unknown snapshotter name: "nosuch"`) || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("log tail does not say why:\n%s", se.LogTail)
	}
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != LockName {
			t.Errorf("left in the state dir: %s", e.Name())
		}
	}
}

// TestEphemeralSystemCABundle: with a SystemCABundle the daemon sees the
// bundle at SystemCABundle, in a mount namespace of its own.
func TestEphemeralSystemCABundle(t *testing.T) {
	bundle := os.Getenv("BUILDKITD_CA_BUNDLE")
	if bundle == "" {
		t.Skip("BUILDKITD_CA_BUNDLE is unset")
	}
	l := integrationLauncher(t, shortDir(t), func(c *LauncherConfig) { c.SystemCABundle = bundle })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	i, err := l.Start(ctx, "ca")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", i.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	points, err := parseMountPoints(strings.NewReader(string(mi)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(points, SystemCABundle) {
		t.Errorf("%s is not mounted in the daemon's namespace", SystemCABundle)
	}
	if err := i.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, i.Pid(), i.Dir())
}

// TestEphemeralExecKilledMidBuild runs a build step in a real container
// (BUILDKITD_TEST_IMAGE, e.g. the stack's builder image, pulled with the
// credentials in DOCKER_CONFIG), then closes the instance while a second
// step still runs: buildkitd does not exit on SIGTERM while a build runs,
// so Close kills it, and must then remove the build container it left and
// the container's mounts.
func TestEphemeralExecKilledMidBuild(t *testing.T) {
	image := os.Getenv("BUILDKITD_TEST_IMAGE")
	if image == "" || os.Getenv("BUILDKITD_CONFIG") == "" {
		t.Skip("BUILDKITD_TEST_IMAGE and BUILDKITD_CONFIG (with the image's registry) are unset")
	}
	auth, err := DockerAuth(os.Getenv("DOCKER_CONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	l := integrationLauncher(t, shortDir(t), func(c *LauncherConfig) { c.StopTimeout = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	i, err := l.Start(ctx, "exec")
	if err != nil {
		t.Fatal(err)
	}
	c, err := i.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	solve := func(ctx context.Context, args ...string) error {
		def, err := llb.Image(image).Run(llb.Args(args)).Root().Marshal(ctx)
		if err != nil {
			return err
		}
		_, err = c.Solve(ctx, def, client.SolveOpt{Session: []session.Attachable{auth}}, nil)
		return err
	}
	t0 := time.Now()
	if err := solve(ctx, "/bin/sh", "-c", "echo hi >/hi"); err != nil {
		t.Fatalf("exec solve: %v\n%s", err, logTail(i.LogFile(), 40))
	}
	t.Logf("pull + exec took %s", time.Since(t0).Round(time.Millisecond))

	runc := lookPathIn("runc", os.Getenv("PATH"))
	if runc == "" {
		t.Fatal("no runc on PATH")
	}
	solveDone := make(chan error, 1)
	go func() { solveDone <- solve(ctx, "/bin/sleep", "300") }()
	var ids []string
	for len(ids) == 0 { // until the step's container runs
		select {
		case err := <-solveDone:
			t.Fatalf("sleep solve ended: %v", err)
		case <-ctx.Done():
			t.Fatal("the sleep step never started")
		case <-time.After(50 * time.Millisecond):
		}
		out, err := exec.CommandContext(ctx, runc, "list", "--format", "json").Output()
		if err != nil {
			t.Fatal(err)
		}
		if ids, err = runcContainersUnder(out, i.Root()); err != nil {
			t.Fatal(err)
		}
	}
	t0 = time.Now()
	if err := i.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("closed mid-build in %s (stop timeout 2s)", time.Since(t0).Round(time.Millisecond))
	assertGone(t, i.Pid(), i.Dir())
	out, err := exec.CommandContext(ctx, runc, "list", "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := runcContainersUnder(out, i.Root()); len(left) > 0 {
		t.Errorf("build containers left: %v", left)
	}
	if err := <-solveDone; err == nil {
		t.Error("the sleep solve succeeded on a closed instance")
	}
}

// TestEphemeralTimings measures start (until ListWorkers answers) and close
// of an instance with nothing in it, five times in a row.
func TestEphemeralTimings(t *testing.T) {
	l := integrationLauncher(t, shortDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var starts, closes []time.Duration
	for range 5 {
		i, err := l.Start(ctx, "timing")
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := i.Close(ctx); err != nil {
			t.Fatal(err)
		}
		starts, closes = append(starts, i.StartDuration()), append(closes, time.Since(t0))
		assertGone(t, i.Pid(), i.Dir())
	}
	slices.Sort(starts)
	slices.Sort(closes)
	t.Logf("start: median %s (min %s, max %s); close: median %s (min %s, max %s)",
		starts[2].Round(time.Millisecond), starts[0].Round(time.Millisecond), starts[4].Round(time.Millisecond),
		closes[2].Round(time.Millisecond), closes[0].Round(time.Millisecond), closes[4].Round(time.Millisecond))
}
