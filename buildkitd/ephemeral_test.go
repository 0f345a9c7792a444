//go:build linux

package buildkitd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func TestInstanceConfig(t *testing.T) {
	const dir = "/state/b-1"
	tests := map[string]struct {
		base    string
		wantErr string
		keep    map[string]any // dotted key path -> value that must survive
	}{
		"no base": {base: ""},
		"stack-like": {
			base: `root = "/var/lib/buildkit"
[grpc]
  address = [ "unix:///run/buildkit/buildkitd.sock", "tcp://0.0.0.0:1234" ]
  debugAddress = "0.0.0.0:6060"
  uid = 0
[otel]
  socketPath = "/run/buildkit/otel.sock"
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  max-parallelism = 4
  [[worker.oci.gcpolicy]]
    filters = [ "type==exec.cachemount" ]
    keepDuration = "336h"
[registry."127.0.0.1:15000"]
  http = true
  insecure = true
  mirrors = [ "mirror.example:5000" ]
[registry."127.0.0.1:15001"]
  ca = [ "/pki/ca.crt" ]
`,
			keep: map[string]any{
				"grpc.uid":                           int64(0),
				"worker.oci.snapshotter":             "overlayfs",
				"worker.oci.max-parallelism":         int64(4),
				"registry.127.0.0.1:15000.http":      true,
				"registry.127.0.0.1:15000.insecure":  true,
				"registry.127.0.0.1:15000.mirrors":   []any{"mirror.example:5000"},
				"registry.127.0.0.1:15001.ca":        []any{"/pki/ca.crt"},
				"worker.oci.gcpolicy.0.keepDuration": "336h",
			},
		},
		"grpc not a table": {base: `grpc = "x"`, wantErr: "grpc is a string"},
		"otel not a table": {base: `otel = 1`, wantErr: "otel is a int64"},
		"bad toml":         {base: `root = `, wantErr: "parse buildkitd config"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := instanceConfig([]byte(tt.base), dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := toml.Unmarshal(out, &got); err != nil {
				t.Fatalf("output does not parse: %v\n%s", err, out)
			}
			dc, err := loadDaemonConfigBytes(t, out)
			if err != nil {
				t.Fatal(err)
			}
			if dc.Root != dir+"/buildkit" || !slices.Equal(dc.Addresses, []string{"unix://" + dir + "/buildkitd.sock"}) {
				t.Errorf("root %q, addresses %q", dc.Root, dc.Addresses)
			}
			if v := lookup(got, "otel.socketPath"); v != dir+"/otel.sock" {
				t.Errorf("otel.socketPath = %v", v)
			}
			if v := lookup(got, "grpc.debugAddress"); v != nil {
				t.Errorf("grpc.debugAddress = %v, want none", v)
			}
			for k, want := range tt.keep {
				if v := lookup(got, k); !equalValue(v, want) {
					t.Errorf("%s = %#v, want %#v", k, v, want)
				}
			}
		})
	}
}

// loadDaemonConfigBytes reads out with LoadDaemonConfig, the reader the
// Supervisor uses.
func loadDaemonConfigBytes(t *testing.T, out []byte) (DaemonConfig, error) {
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadDaemonConfig(p)
}

// lookup follows a dotted path (a number indexes an array; the registry
// host keys hold dots, so they are matched greedily).
func lookup(v any, path string) any {
	if path == "" {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			if path == k {
				return sub
			}
			if rest, ok := strings.CutPrefix(path, k+"."); ok {
				if r := lookup(sub, rest); r != nil {
					return r
				}
			}
		}
	case []any:
		head, rest, _ := strings.Cut(path, ".")
		for i, sub := range x {
			if head == string(rune('0'+i)) {
				return lookup(sub, rest)
			}
		}
	}
	return nil
}

func equalValue(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok && bok {
		return slices.Equal(as, bs)
	}
	return a == b
}

func TestParseMountPoints(t *testing.T) {
	const mi = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:30 / /state/a-1/buildkit/runc-overlayfs/executor/x/rootfs rw - overlay overlay rw,lowerdir=/l
36 22 0:31 / /state/a-1/buildkit/with\040space rw - tmpfs tmpfs rw
37 35 0:32 / /state/a-1/buildkit/runc-overlayfs/executor/x/rootfs/proc rw - proc proc rw
38 22 0:33 / /state/a-10/buildkit rw - tmpfs tmpfs rw
39 22 0:34 / /state/a-1 rw - tmpfs tmpfs rw
short line
`
	points, err := parseMountPoints(strings.NewReader(mi))
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 6 || points[2] != "/state/a-1/buildkit/with space" {
		t.Fatalf("points = %q", points)
	}
	got := mountsUnder(points, "/state/a-1/")
	want := []string{ // last mounted first; a-10 is another instance
		"/state/a-1",
		"/state/a-1/buildkit/runc-overlayfs/executor/x/rootfs/proc",
		"/state/a-1/buildkit/with space",
		"/state/a-1/buildkit/runc-overlayfs/executor/x/rootfs",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %q\nwant %q", got, want)
	}
}

func TestUnescapeMountField(t *testing.T) {
	tests := map[string]string{
		`/a/b`:              "/a/b",
		`/a\040b`:           "/a b",
		`/a\011b\012c\134d`: "/a\tb\nc\\d",
		`/trailing\04`:      `/trailing\04`,
		`/not\9octal`:       `/not\9octal`,
	}
	for in, want := range tests {
		if got := unescapeMountField(in); got != want {
			t.Errorf("unescapeMountField(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRuncContainersUnder(t *testing.T) {
	tests := map[string]struct {
		list string
		want []string
	}{
		"none":  {list: "null\n"},
		"empty": {list: ""},
		"mixed": {
			list: `[{"id":"a","pid":1,"bundle":"/state/x-1/buildkit/runc-overlayfs/executor/a"},
				{"id":"b","pid":2,"bundle":"/state/x-10/buildkit/runc-overlayfs/executor/b"},
				{"id":"c","pid":3,"bundle":"/other/c"},
				{"id":"e","pid":5,"bundle":"/state/x-1/buildkit2/e"},
				{"id":"d","pid":4,"bundle":"/state/x-1/buildkit/runc-overlayfs/executor/d"}]`,
			want: []string{"a", "d"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := runcContainersUnder([]byte(tt.list), "/state/x-1/buildkit")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := runcContainersUnder([]byte("{"), "/r"); err == nil {
		t.Error("no error for a bad runc list")
	}
}

func TestOwnsDir(t *testing.T) {
	cmd := func(args ...string) []byte { return []byte(strings.Join(args, "\x00") + "\x00") }
	tests := []struct {
		cmdline []byte
		want    bool
	}{
		{cmd("/bin/buildkitd", "--config", "/s/a-1/buildkitd.toml"), true},
		{cmd("unshare", "--mount", "sh", "-c", "...", "/bin/buildkitd", "--config", "/s/a-1/buildkitd.toml"), true},
		{cmd("/bin/buildkitd", "--config", "/s/a-10/buildkitd.toml"), false},
		{cmd("/bin/sleep", "100"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := ownsDir(tt.cmdline, "/s/a-1"); got != tt.want {
			t.Errorf("ownsDir(%q) = %v, want %v", tt.cmdline, got, tt.want)
		}
	}
}

func TestLogTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString(strings.Repeat("x", i%7) + "line\n")
	}
	b.WriteString("the end\n")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(logTail(p, 3), "\n")
	if len(got) != 3 || got[2] != "the end" {
		t.Errorf("logTail = %q", got)
	}
	if logTail(filepath.Join(t.TempDir(), "none"), 3) != "" {
		t.Error("logTail of a missing file is not empty")
	}
}

// fakeBuildkitd is a stand-in for buildkitd: it creates its socket file in
// its working directory (the instance's) and sleeps, unless FAKE_MODE says
// otherwise.
const fakeBuildkitd = `#!/bin/sh
echo "fake buildkitd $*"
case "$FAKE_MODE" in
exit) echo "fatal: this config is no good" >&2; exit 3 ;;
ignoreterm) trap '' TERM ;;
esac
: > buildkitd.sock
exec sleep 1000
`

// fakeLauncher makes a Launcher on fakeBuildkitd whose readiness check
// answers at once, with each of edits applied to its config.
func fakeLauncher(t *testing.T, stateDir string, edits ...func(*LauncherConfig)) *Launcher {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fake-buildkitd")
	if err := os.WriteFile(bin, []byte(fakeBuildkitd), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := LauncherConfig{
		StateDir:    stateDir,
		Binary:      bin,
		StopTimeout: 5 * time.Second,
		ready:       func(context.Context, Endpoint) error { return nil },
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	l, err := NewLauncher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// stateDirFor is a short state directory (socket paths are bounded).
func stateDirFor(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ephu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "s")
}

// instanceDirs lists the state directory without its lock.
func instanceDirs(t *testing.T, stateDir string) []string {
	t.Helper()
	dirs, err := leftoverDirs(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func TestLauncherStartClose(t *testing.T) {
	stateDir := stateDirFor(t)
	var probes atomic.Int32
	l := fakeLauncher(t, stateDir, func(c *LauncherConfig) {
		c.ready = func(context.Context, Endpoint) error {
			if probes.Add(1) < 3 {
				return errors.New("not yet")
			}
			return nil
		}
	})
	i, err := l.Start(context.Background(), "build-1")
	if err != nil {
		t.Fatal(err)
	}
	if probes.Load() != 3 {
		t.Errorf("%d probes, want 3 (Start must wait for an answer)", probes.Load())
	}
	if filepath.Dir(i.Dir()) != l.StateDir() || !strings.HasPrefix(filepath.Base(i.Dir()), "build-1-") {
		t.Errorf("Dir = %s, want %s/build-1-RANDOM", i.Dir(), l.StateDir())
	}
	if i.Root() != filepath.Join(i.Dir(), "buildkit") || i.Address() != "unix://"+filepath.Join(i.Dir(), "buildkitd.sock") {
		t.Errorf("Root %s, Address %s", i.Root(), i.Address())
	}
	if st, err := os.Stat(i.Root()); err != nil || !st.IsDir() {
		t.Errorf("root: %v", err)
	}
	dc, err := LoadDaemonConfig(filepath.Join(i.Dir(), ConfigName))
	if err != nil || dc.Root != i.Root() || !slices.Equal(dc.Addresses, []string{i.Address()}) {
		t.Errorf("instance config: %+v, %v", dc, err)
	}
	if log := logTail(i.LogFile(), 5); !strings.Contains(log, "fake buildkitd --config "+filepath.Join(i.Dir(), ConfigName)) {
		t.Errorf("log: %q", log)
	}
	if pid, err := readPidFile(filepath.Join(i.Dir(), PidFileName)); err != nil || pid != i.Pid() || !processAlive(pid) {
		t.Errorf("pid file: %d, %v; Pid %d", pid, err, i.Pid())
	}
	if i.StartDuration() <= 0 {
		t.Errorf("StartDuration = %s", i.StartDuration())
	}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for n := range errs {
		wg.Go(func() { errs[n] = i.Close(context.Background()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-i.Exited():
	default:
		t.Error("Exited is open after Close")
	}
	if processAlive(i.Pid()) {
		t.Errorf("pid %d runs after Close", i.Pid())
	}
	if _, err := os.Stat(i.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir after Close: %v", err)
	}
	if err := i.Close(context.Background()); err != nil {
		t.Errorf("Close again: %v", err)
	}
}

func TestLauncherStartFails(t *testing.T) {
	tests := map[string]struct {
		edit    func(*LauncherConfig)
		wantErr string
		wantLog string
	}{
		"daemon exits": {
			edit:    func(c *LauncherConfig) { c.Env = []string{"FAKE_MODE=exit"} },
			wantErr: "exited before it answered: exit status 3",
			wantLog: "fatal: this config is no good",
		},
		"never answers": {
			edit: func(c *LauncherConfig) {
				c.ReadyTimeout = 100 * time.Millisecond
				c.ready = func(context.Context, Endpoint) error { return errors.New("connection refused") }
			},
			wantErr: "no answer within 100ms: connection refused",
			wantLog: "fake buildkitd --config",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			stateDir := stateDirFor(t)
			l := fakeLauncher(t, stateDir, tt.edit)
			_, err := l.Start(context.Background(), "b")
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("Start: %v, want a *StartError", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(se.LogTail, tt.wantLog) || !strings.Contains(err.Error(), tt.wantLog) {
				t.Errorf("error %q\nwant %q and log %q", err, tt.wantErr, tt.wantLog)
			}
			if d := instanceDirs(t, stateDir); len(d) > 0 {
				t.Errorf("left after a failed start: %v", d)
			}
		})
	}
}

func TestLauncherCloseKillsStubbornDaemon(t *testing.T) {
	l := fakeLauncher(t, stateDirFor(t), func(c *LauncherConfig) {
		c.Env = []string{"FAKE_MODE=ignoreterm"}
		c.StopTimeout = 200 * time.Millisecond
	})
	i, err := l.Start(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	// The trap is set before the socket appears, so SIGTERM is ignored.
	if err := i.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if processAlive(i.Pid()) {
		t.Errorf("pid %d survived Close", i.Pid())
	}
	if !strings.Contains(i.waitErr.Error(), "killed") {
		t.Errorf("daemon ended with %v, want killed", i.waitErr)
	}
}

func TestLauncherMaxInstances(t *testing.T) {
	l := fakeLauncher(t, stateDirFor(t), func(c *LauncherConfig) { c.MaxInstances = 1 })
	a, err := l.Start(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.Start(ctx, "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Start with one slot: %v, want a deadline error", err)
	}
	got := make(chan error, 1)
	go func() {
		b, err := l.Start(context.Background(), "b")
		if err == nil {
			err = b.Close(context.Background())
		}
		got <- err
	}()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Start after a slot was freed: %v", err)
	}
	// A failed start gives its slot back.
	bad := fakeLauncher(t, stateDirFor(t), func(c *LauncherConfig) {
		c.MaxInstances = 1
		c.Env = []string{"FAKE_MODE=exit"}
	})
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := bad.Start(ctx, "x")
		cancel()
		var se *StartError
		if !errors.As(err, &se) {
			t.Fatalf("Start: %v, want a *StartError (not a slot wait)", err)
		}
	}
}

func TestLauncherClose(t *testing.T) {
	stateDir := stateDirFor(t)
	l := fakeLauncher(t, stateDir)
	var insts []*Instance
	for _, n := range []string{"a", "b", "c"} {
		i, err := l.Start(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, i)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, i := range insts {
		if processAlive(i.Pid()) {
			t.Errorf("%s: pid %d runs after Launcher.Close", i.Name(), i.Pid())
		}
	}
	if d := instanceDirs(t, stateDir); len(d) > 0 {
		t.Errorf("left after Launcher.Close: %v", d)
	}
	if _, err := l.Start(context.Background(), "d"); !errors.Is(err, ErrLauncherClosed) {
		t.Errorf("Start after Close: %v, want ErrLauncherClosed", err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The lock is free again.
	fakeLauncher(t, stateDir)
}

func TestLauncherStateDirLocked(t *testing.T) {
	stateDir := stateDirFor(t)
	fakeLauncher(t, stateDir)
	_, err := NewLauncher(LauncherConfig{StateDir: stateDir, Binary: "/bin/sh"})
	if !errors.Is(err, errStateDirInUse) {
		t.Fatalf("second launcher on one state dir: %v, want errStateDirInUse", err)
	}
}

// TestLauncherRemovesLeftovers: instance directories of a process that died
// (a daemon still running, a mount under its root, a pid file naming an
// unrelated process) are removed by NewLauncher; files and other processes
// are left alone.
func TestLauncherRemovesLeftovers(t *testing.T) {
	stateDir := stateDirFor(t)
	mk := func(name string) string {
		d := filepath.Join(stateDir, name)
		if err := os.MkdirAll(filepath.Join(d, RootName, "snapshots"), 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// 1. A daemon left running.
	running := mk("a-1")
	// (This test binary as the fake of supervise_test.go: a shell script
	// would lose its arguments when it execs sleep.)
	daemon := exec.Command(os.Args[0], "--config", filepath.Join(running, ConfigName))
	daemon.Env = append(os.Environ(), "FAKE_BUILDKITD=serve", "GORACE=atexit_sleep_ms=0")
	daemon.Dir = running
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	daemonDone := make(chan struct{})
	go func() { _ = daemon.Wait(); close(daemonDone) }()
	t.Cleanup(func() { _ = daemon.Process.Kill() })
	if err := writePidFile(filepath.Join(running, PidFileName), daemon.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// 2. A pid file whose pid now belongs to someone else.
	reused := mk("b-2")
	other := exec.Command("sleep", "1000")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := writePidFile(filepath.Join(reused, PidFileName), other.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// 3. A mount left under a root (needs root).
	mounted := mk("c-3")
	mnt := filepath.Join(mounted, RootName, "snapshots")
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
		if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// 4. A file that is not an instance.
	note := filepath.Join(stateDir, "README")
	if err := os.WriteFile(note, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	fakeLauncher(t, stateDir)

	select {
	case <-daemonDone:
	case <-time.After(5 * time.Second):
		t.Error("the leftover daemon was not killed")
	}
	if !processAlive(other.Process.Pid) {
		t.Error("a process that does not belong to the leftover was killed")
	}
	if d := instanceDirs(t, stateDir); len(d) > 0 {
		t.Errorf("leftovers not removed: %v", d)
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
	if m := mountsUnder(points, stateDir); len(m) > 0 {
		t.Errorf("still mounted: %v", m)
	}
	if _, err := os.Stat(note); err != nil {
		t.Errorf("a file in the state dir was removed: %v", err)
	}
}

func TestStartRejects(t *testing.T) {
	long := filepath.Join(stateDirFor(t), strings.Repeat("d", 80))
	tests := map[string]struct {
		stateDir, name, wantErr string
	}{
		"empty name":      {name: "", wantErr: "instance name"},
		"slash":           {name: "a/b", wantErr: "instance name"},
		"dot dot":         {name: "..", wantErr: "instance name"},
		"too long":        {name: strings.Repeat("n", 41), wantErr: "instance name"},
		"long socket":     {stateDir: long, name: "n", wantErr: "longer than 104 bytes"},
		"fine but closed": {name: "ok", wantErr: "closed"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sd := tt.stateDir
			if sd == "" {
				sd = stateDirFor(t)
			}
			l := fakeLauncher(t, sd)
			if tt.wantErr == "closed" {
				_ = l.Close(context.Background())
			}
			_, err := l.Start(context.Background(), tt.name)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Start(%q): %v, want %q", tt.name, err, tt.wantErr)
			}
			if d := instanceDirs(t, sd); len(d) > 0 {
				t.Errorf("left: %v", d)
			}
		})
	}
}

func TestLauncherConfigRejects(t *testing.T) {
	tmp := t.TempDir()
	f := filepath.Join(tmp, "bad.toml")
	if err := os.WriteFile(f, []byte("grpc = 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		edit    func(*LauncherConfig)
		wantErr string
	}{
		"empty state dir":    {func(c *LauncherConfig) { c.StateDir = "" }, "state directory is empty"},
		"missing binary":     {func(c *LauncherConfig) { c.Binary = "/no/such/buildkitd" }, "buildkitd binary"},
		"missing config":     {func(c *LauncherConfig) { c.ConfigFile = "/no/such.toml" }, "no such file"},
		"bad config":         {func(c *LauncherConfig) { c.ConfigFile = f }, "grpc is a int64"},
		"root arg":           {func(c *LauncherConfig) { c.Args = []string{"--debug", "--root=/x"} }, "--root=/x is set by the launcher"},
		"addr arg":           {func(c *LauncherConfig) { c.Args = []string{"--addr", "tcp://x"} }, "--addr is set by the launcher"},
		"config arg":         {func(c *LauncherConfig) { c.Args = []string{"-config=/x"} }, "-config=/x is set by the launcher"},
		"bad env":            {func(c *LauncherConfig) { c.Env = []string{"A=1", "NOEQUALS"} }, `"NOEQUALS": want KEY=VALUE`},
		"empty env key":      {func(c *LauncherConfig) { c.Env = []string{"=1"} }, "want KEY=VALUE"},
		"negative ready":     {func(c *LauncherConfig) { c.ReadyTimeout = -time.Second }, "ready timeout -1s"},
		"negative stop":      {func(c *LauncherConfig) { c.StopTimeout = -time.Second }, "stop timeout -1s"},
		"negative max":       {func(c *LauncherConfig) { c.MaxInstances = -1 }, "max instances -1"},
		"missing CA bundle":  {func(c *LauncherConfig) { c.SystemCABundle = "/no/such.pem" }, "CA bundle: stat /no/such.pem"},
		"CA bundle not file": {func(c *LauncherConfig) { c.SystemCABundle = tmp }, "is not a file"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sd := stateDirFor(t)
			cfg := LauncherConfig{StateDir: sd, Binary: "/bin/sh"}
			tt.edit(&cfg)
			_, err := NewLauncher(cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "buildkitd launcher: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want \"buildkitd launcher: ...%s...\"", err, tt.wantErr)
			}
			// Nothing was made: the checks come first.
			if _, err := os.Stat(sd); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir made by a rejected config: %v", err)
			}
		})
	}
}

// TestLauncherConfigDefaults: zero values are the defaults, and NewLauncher
// keeps its own copy of the caller's slices.
func TestLauncherConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, DefaultBinary)
	if err := os.WriteFile(bin, []byte(fakeBuildkitd), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	args, env := []string{"--debug"}, []string{"FAKE=1"}
	l, err := NewLauncher(LauncherConfig{StateDir: stateDirFor(t), Args: args, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	args[0], env[0] = "--root=/x", "FAKE=2"
	c := l.cfg
	if l.binary != bin || c.ReadyTimeout != DefaultReadyTimeout || c.StopTimeout != DefaultStopTimeout ||
		l.slots != nil || l.log == nil || c.ready == nil {
		t.Errorf("defaults: binary %q, ready %s, stop %s, slots %v, log %v, ready check set %t",
			l.binary, c.ReadyTimeout, c.StopTimeout, l.slots, l.log, c.ready != nil)
	}
	if !slices.Equal(c.Args, []string{"--debug"}) || l.env[len(l.env)-1] != "FAKE=1" {
		t.Errorf("the caller's slices are shared: args %q, env ends with %q", c.Args, l.env[len(l.env)-1])
	}
}

// TestLauncherArgs: Args come after --config on the daemon's command line.
func TestLauncherArgs(t *testing.T) {
	l := fakeLauncher(t, stateDirFor(t), func(c *LauncherConfig) { c.Args = []string{"--debug", "--oci-worker=true"} })
	i, err := l.Start(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	defer i.Close(context.Background())
	want := "fake buildkitd --config " + filepath.Join(i.Dir(), ConfigName) + " --debug --oci-worker=true\n"
	// The fake writes its socket after its command line.
	if b, err := os.ReadFile(i.LogFile()); err != nil || string(b) != want {
		t.Errorf("log %q (%v), want %q", b, err, want)
	}
}

func TestEnvValue(t *testing.T) {
	env := []string{"A=1", "PATH=/a", "B=", "PATH=/b:/c"}
	if got := envValue(env, "PATH"); got != "/b:/c" {
		t.Errorf("PATH = %q", got)
	}
	if got := envValue(env, "C"); got != "" {
		t.Errorf("C = %q", got)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "runc")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := lookPathIn("runc", "/no/such:"+dir); got != exe {
		t.Errorf("lookPathIn = %q, want %q", got, exe)
	}
	if got := lookPathIn("runc", "/no/such"); got != "" {
		t.Errorf("lookPathIn found %q", got)
	}
}
