package buildkitd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests run this test binary as a fake buildkitd: with FAKE_BUILDKITD
// set, TestMain behaves as the mode says instead of running tests.
//
//	serve     run until SIGTERM, then exit 0
//	crash     exit 3 at once
//	stubborn  ignore SIGTERM and run until killed
//
// Each start appends "pid arg arg..." to $FAKE_BUILDKITD_LOG.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FAKE_BUILDKITD"); mode != "" {
		os.Exit(fakeDaemon(mode))
	}
	os.Exit(m.Run())
}

func fakeDaemon(mode string) int {
	if log := os.Getenv("FAKE_BUILDKITD_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, os.Getpid(), strings.Join(os.Args[1:], " "))
			f.Close()
		}
	}
	fmt.Println("fake buildkitd running")
	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "fake buildkitd crashing")
		return 3
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		select {}
	default:
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		<-ch
		return 0
	}
}

// fake makes a supervisor config that runs the fake daemon in mode.
func fake(t *testing.T, mode string) (SupervisorConfig, string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "starts.log")
	t.Setenv("FAKE_BUILDKITD", mode)
	t.Setenv("FAKE_BUILDKITD_LOG", log)
	// Under -race the fake would sleep 1s at exit by default.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	return SupervisorConfig{
		Binary:         os.Args[0],
		Dir:            dir,
		InitialBackoff: 20 * time.Millisecond,
		MaxBackoff:     80 * time.Millisecond,
		StopTimeout:    5 * time.Second,
		ReadyCheck:     func(context.Context, Endpoint) error { return nil },
	}, log
}

// changes records OnChange calls with their times.
type change struct {
	up bool
	at time.Time
}

func recordChanges(cfg *SupervisorConfig) chan change {
	ch := make(chan change, 100)
	cfg.OnChange = func(up bool) { ch <- change{up, time.Now()} }
	return ch
}

func next(t *testing.T, ch chan change, want bool) change {
	t.Helper()
	select {
	case c := <-ch:
		if c.up != want {
			t.Fatalf("OnChange(%v), want OnChange(%v)", c.up, want)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no OnChange(%v) within 10s", want)
	}
	return change{}
}

// run starts s.Run and returns a function that stops it and returns its
// error.
func run(t *testing.T, s *Supervisor) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return within 20s of its context ending")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// startLines waits until the fake daemon has logged n starts and returns
// their lines.
func startLines(t *testing.T, log string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon logged %d starts within 10s, want %d", len(lines), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countHandler counts log records with one message.
type countHandler struct {
	msg string
	n   *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestSupervisorStartsAndStops(t *testing.T) {
	cfg, log := fake(t, "serve")
	changes := recordChanges(&cfg)
	s, err := NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	next(t, changes, true)
	pid := s.Pid()
	if pid == 0 || !alive(pid) {
		t.Fatalf("Pid() = %d, not a live process", pid)
	}
	if got, err := readPidFile(filepath.Join(cfg.Dir, PidFileName)); err != nil || got != pid {
		t.Errorf("pid file says %d (%v), want %d", got, err, pid)
	}
	wantArgs := fmt.Sprintf("%d --root %s --addr unix://%s", pid, filepath.Join(cfg.Dir, RootName), filepath.Join(cfg.Dir, SocketName))
	if got := startLines(t, log, 1)[0]; got != wantArgs {
		t.Errorf("the daemon was started as %q, want %q", got, wantArgs)
	}
	if got, want := s.Endpoint().Address, "unix://"+filepath.Join(cfg.Dir, SocketName); got != want {
		t.Errorf("Endpoint = %s, want %s", got, want)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	next(t, changes, false)
	if alive(pid) {
		t.Errorf("the daemon (pid %d) still runs after Run returned", pid)
	}
	if s.Pid() != 0 {
		t.Errorf("Pid() = %d after Run returned", s.Pid())
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, PidFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
}

// A daemon that keeps crashing is restarted after waits that double up to
// MaxBackoff.
func TestSupervisorRestartsWithBackoff(t *testing.T) {
	cfg, log := fake(t, "crash")
	cfg.InitialBackoff, cfg.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	changes := recordChanges(&cfg)
	s, err := NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	// The fake crashes at once, so the time from one down to the next up is
	// the backoff (plus a process start).
	want := []time.Duration{50, 100, 200, 200, 200}
	next(t, changes, true)
	for i, w := range want {
		w *= time.Millisecond
		down := next(t, changes, false)
		up := next(t, changes, true)
		if gap := up.at.Sub(down.at); gap < w || gap > w+2*time.Second {
			t.Errorf("restart %d came %v after the exit, want %v", i+1, gap, w)
		}
	}
	startLines(t, log, len(want)+1)
}

// A daemon killed from outside is restarted; one that ran for ResetAfter
// is restarted after the initial backoff again.
func TestSupervisorRestartsKilledDaemonAndResetsBackoff(t *testing.T) {
	cfg, _ := fake(t, "serve")
	cfg.InitialBackoff, cfg.MaxBackoff, cfg.ResetAfter = 100*time.Millisecond, 5*time.Second, 500*time.Millisecond
	changes := recordChanges(&cfg)
	s, err := NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	next(t, changes, true)
	kill := func() {
		t.Helper()
		pid := s.Pid()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	gap := func() time.Duration {
		t.Helper()
		down := next(t, changes, false)
		return next(t, changes, true).at.Sub(down.at)
	}
	kill()
	if g := gap(); g < 100*time.Millisecond || g > 400*time.Millisecond {
		t.Errorf("first restart after %v, want about 100ms", g)
	}
	kill()
	if g := gap(); g < 200*time.Millisecond || g > 800*time.Millisecond {
		t.Errorf("second quick restart after %v, want about 200ms", g)
	}
	time.Sleep(700 * time.Millisecond) // up for longer than ResetAfter
	kill()
	if g := gap(); g < 100*time.Millisecond || g > 400*time.Millisecond {
		t.Errorf("restart after a long run came after %v, want the initial 100ms again", g)
	}
}

// A daemon that ignores SIGTERM gets SIGKILL after StopTimeout.
func TestSupervisorKillsStubbornDaemon(t *testing.T) {
	cfg, _ := fake(t, "stubborn")
	cfg.StopTimeout = 300 * time.Millisecond
	s, err := NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	pid := s.Pid()
	time.Sleep(100 * time.Millisecond) // let it install its SIGTERM handler
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("stopping took %v, want StopTimeout (300ms) and a kill", took)
	}
	if alive(pid) {
		t.Errorf("the daemon (pid %d) survived", pid)
	}
}

// A daemon that never answers is stopped after ReadyTimeout and started
// again; WaitReady says why.
func TestSupervisorReadyTimeout(t *testing.T) {
	cfg, _ := fake(t, "serve")
	var starts atomic.Int64
	cfg.Logger = slog.New(countHandler{msg: "buildkitd started", n: &starts})
	cfg.ReadyTimeout = 200 * time.Millisecond
	cfg.ReadyCheck = func(context.Context, Endpoint) error { return errors.New("connection refused") }
	s, err := NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = s.WaitReady(ctx)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("WaitReady = %v, want it to name the last error", err)
	}
	if n := starts.Load(); n < 2 {
		t.Errorf("the daemon started %d times in 1s with a 200ms ready timeout, want at least 2", n)
	}
}

func TestSupervisorConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bin := os.Args[0]
	cases := []struct {
		name, config, root string
		wantArgs           []string
		wantAddr, wantErr  string
	}{
		{
			name:     "root and address from the file",
			config:   "root = \"/srv/bk\"\n[grpc]\naddress = [\"tcp://0.0.0.0:1234\", \"unix:///run/bk.sock\"]\n[worker.oci]\nenabled = true\n",
			wantArgs: []string{"--config", "CONFIG"},
			wantAddr: "unix:///run/bk.sock",
		},
		{
			name:     "Root overrides the file",
			config:   "root = \"/srv/bk\"\n",
			root:     "/var/bk",
			wantArgs: []string{"--config", "CONFIG", "--root", "/var/bk", "--addr", "unix://" + filepath.Join(dir, SocketName)},
			wantAddr: "unix://" + filepath.Join(dir, SocketName),
		},
		{
			name:    "no unix address",
			config:  "[grpc]\naddress = [\"tcp://0.0.0.0:1234\"]\n",
			wantErr: "no unix:// address",
		},
		{
			name:    "not TOML",
			config:  "root = [",
			wantErr: "parse buildkitd config",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := write(fmt.Sprintf("bk%d.toml", i), tc.config)
			s, err := NewSupervisor(SupervisorConfig{Binary: bin, Dir: dir, ConfigFile: path, Root: tc.root})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []string{bin}
			for _, a := range tc.wantArgs {
				want = append(want, strings.ReplaceAll(a, "CONFIG", path))
			}
			if got := s.Command(); !slices.Equal(got, want) {
				t.Errorf("command %q, want %q", got, want)
			}
			if s.Endpoint().Address != tc.wantAddr {
				t.Errorf("endpoint %s, want %s", s.Endpoint().Address, tc.wantAddr)
			}
		})
	}
}

func TestNewSupervisorRefuses(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	for name, cfg := range map[string]SupervisorConfig{
		"no dir":           {Binary: os.Args[0]},
		"missing binary":   {Binary: "no-such-buildkitd-binary", Dir: t.TempDir()},
		"long socket path": {Binary: os.Args[0], Dir: long},
		"negative backoff": {Binary: os.Args[0], Dir: t.TempDir(), InitialBackoff: -time.Second},
	} {
		if _, err := NewSupervisor(cfg); err == nil {
			t.Errorf("%s: NewSupervisor succeeded", name)
		}
	}
}
