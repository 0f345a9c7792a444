package buildkitd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of SupervisorConfig.
const (
	DefaultBinary         = "buildkitd"
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 30 * time.Second
	DefaultResetAfter     = time.Minute
	DefaultReadyTimeout   = time.Minute
	DefaultStopTimeout    = 15 * time.Second
)

// Files a Supervisor keeps in SupervisorConfig.Dir.
const (
	// SocketName is the daemon's socket, unless its config file names one.
	SocketName = "buildkitd.sock"
	// RootName is the daemon's state, unless Root or its config file names
	// another directory.
	RootName = "buildkit"
	// PidFileName holds the running daemon's process id, for operators.
	PidFileName = "buildkitd.pid"
)

// maxSocketPath is the longest unix socket path buildkitd accepts.
const maxSocketPath = 104

// SupervisorConfig says how to run a local buildkitd.
type SupervisorConfig struct {
	// Binary is the buildkitd executable, a path or a name looked up in
	// PATH. Default DefaultBinary.
	Binary string
	// ConfigFile is a buildkitd.toml passed as --config; empty for none.
	ConfigFile string
	// Dir holds the socket, the pid file and, by default, the daemon's
	// root (see SocketName, PidFileName, RootName). Required.
	Dir string
	// Root is the daemon's state directory, passed as --root. Empty: the
	// config file's root if it sets one, else Dir/RootName.
	Root string
	// Args are more arguments for buildkitd, after the ones above.
	Args []string
	// Logger receives each start, exit and line of output of the daemon;
	// nil discards them.
	Logger *slog.Logger

	// InitialBackoff is the wait before the first restart of a daemon that
	// exited; each further exit doubles it, up to MaxBackoff. A daemon that
	// ran for ResetAfter starts over at InitialBackoff. Defaults
	// DefaultInitialBackoff, DefaultMaxBackoff, DefaultResetAfter.
	InitialBackoff, MaxBackoff, ResetAfter time.Duration
	// ReadyTimeout is how long a started daemon may take to answer; one that
	// does not is stopped and restarted. Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// StopTimeout is how long the daemon may take to exit after SIGTERM
	// before it gets SIGKILL. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// ReadyCheck tells whether the daemon at e answers, within ctx's
	// deadline. Default: Dial and Probe.
	ReadyCheck func(ctx context.Context, e Endpoint) error
	// OnChange is told when the daemon starts answering (up) and when it
	// exits (down). It must return quickly.
	OnChange func(up bool)
}

// A Supervisor runs buildkitd as a child process: it starts it, waits until
// it answers, restarts it with backoff whenever it exits, and stops it when
// its Run's context ends. Make one with NewSupervisor.
type Supervisor struct {
	cfg      SupervisorConfig
	binary   string
	args     []string
	endpoint Endpoint
	pidFile  string
	log      *slog.Logger

	ready   chan struct{} // closed when the daemon first answers
	done    chan struct{} // closed when Run returns
	running sync.Once

	mu      sync.Mutex
	pid     int
	up      bool
	lastErr error
}

// NewSupervisor checks cfg, finds the binary and works out the daemon's
// arguments and address. It starts nothing; Run does.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Dir == "" {
		return nil, errors.New("supervisor: Dir is required")
	}
	if cfg.InitialBackoff < 0 || cfg.MaxBackoff < 0 || cfg.ResetAfter < 0 || cfg.ReadyTimeout < 0 || cfg.StopTimeout < 0 {
		return nil, errors.New("supervisor: durations must not be negative")
	}
	setDefault(&cfg.Binary, DefaultBinary)
	setDefault(&cfg.InitialBackoff, DefaultInitialBackoff)
	setDefault(&cfg.MaxBackoff, DefaultMaxBackoff)
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.InitialBackoff)
	setDefault(&cfg.ResetAfter, DefaultResetAfter)
	setDefault(&cfg.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&cfg.StopTimeout, DefaultStopTimeout)
	if cfg.ReadyCheck == nil {
		cfg.ReadyCheck = dialAndProbe
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("supervisor: buildkitd binary: %w", err)
	}
	s := &Supervisor{
		cfg:     cfg,
		binary:  bin,
		pidFile: filepath.Join(dir, PidFileName),
		log:     cfg.Logger,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	var dc DaemonConfig
	if cfg.ConfigFile != "" {
		if dc, err = LoadDaemonConfig(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("supervisor: %w", err)
		}
		s.args = append(s.args, "--config", cfg.ConfigFile)
	}
	switch {
	case cfg.Root != "":
		s.args = append(s.args, "--root", cfg.Root)
	case dc.Root == "":
		s.args = append(s.args, "--root", filepath.Join(dir, RootName))
	}
	// --addr replaces every address of the config file, so it is only given
	// when the file has none.
	if len(dc.Addresses) == 0 {
		s.endpoint.Address = "unix://" + filepath.Join(dir, SocketName)
		s.args = append(s.args, "--addr", s.endpoint.Address)
	} else {
		for _, a := range dc.Addresses {
			if strings.HasPrefix(a, "unix://") {
				s.endpoint.Address = a
				break
			}
		}
		if s.endpoint.Address == "" {
			return nil, fmt.Errorf("supervisor: %s: [grpc] address %q has no unix:// address to reach the daemon on", cfg.ConfigFile, dc.Addresses)
		}
	}
	if p := strings.TrimPrefix(s.endpoint.Address, "unix://"); len(p) > maxSocketPath {
		return nil, fmt.Errorf("supervisor: socket path %s is longer than %d bytes; use a shorter Dir", p, maxSocketPath)
	}
	s.args = append(s.args, cfg.Args...)
	return s, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func dialAndProbe(ctx context.Context, e Endpoint) error {
	c, err := Dial(ctx, e)
	if err != nil {
		return err
	}
	defer c.Close()
	return Probe(ctx, c)
}

// Endpoint is where the daemon listens.
func (s *Supervisor) Endpoint() Endpoint { return s.endpoint }

// Command is the daemon's command line (the binary's path, then its
// arguments).
func (s *Supervisor) Command() []string { return append([]string{s.binary}, s.args...) }

// Pid is the process id of the running daemon, 0 when none runs.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// WaitReady waits until the daemon answers for the first time. It fails
// when ctx ends first (with why the last start failed, if one did) or when
// Run has returned.
func (s *Supervisor) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.done:
		return errors.New("buildkitd supervisor stopped")
	case <-ctx.Done():
		s.mu.Lock()
		last := s.lastErr
		s.mu.Unlock()
		if last != nil {
			return fmt.Errorf("buildkitd did not answer: %w (last: %v)", ctx.Err(), last)
		}
		return fmt.Errorf("buildkitd did not answer: %w", ctx.Err())
	}
}

// Run starts the daemon and keeps it running until ctx ends; then it stops
// the daemon (SIGTERM, and SIGKILL after StopTimeout) and returns. Call it
// once.
func (s *Supervisor) Run(ctx context.Context) error {
	again := true
	s.running.Do(func() { again = false })
	if again {
		return errors.New("buildkitd supervisor: Run called twice")
	}
	defer close(s.done)
	if err := os.MkdirAll(filepath.Dir(s.pidFile), 0o700); err != nil {
		return fmt.Errorf("buildkitd supervisor: %w", err)
	}
	backoff := s.cfg.InitialBackoff
	for {
		c, err := s.start()
		if err != nil {
			s.failed(err)
			s.log.Error("buildkitd did not start", "err", err, "restart_in", backoff)
		} else {
			if stopped, err := s.supervise(ctx, c); stopped {
				return err
			}
			if c.uptime() >= s.cfg.ResetAfter {
				backoff = s.cfg.InitialBackoff
			}
			s.log.Warn("buildkitd exited", "pid", c.cmd.Process.Pid, "err", c.err, "uptime", c.uptime().Round(time.Millisecond), "restart_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// child is one run of the daemon.
type child struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{} // closed when the process has exited; err is set
	err     error
	ended   time.Time
}

func (c *child) uptime() time.Duration { return c.ended.Sub(c.started) }

// start starts one daemon process.
func (s *Supervisor) start() (*child, error) {
	out := &lineLogger{log: s.log}
	cmd := exec.Command(s.binary, s.args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	// Processes the daemon leaves behind may hold its output pipe; don't
	// wait for them once it has exited.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.binary, err)
	}
	c := &child{cmd: cmd, started: time.Now(), exited: make(chan struct{})}
	out.setPid(cmd.Process.Pid)
	go func() {
		c.err = cmd.Wait()
		c.ended = time.Now()
		close(c.exited)
	}()
	s.mu.Lock()
	s.pid = cmd.Process.Pid
	s.mu.Unlock()
	if err := writePidFile(s.pidFile, cmd.Process.Pid); err != nil {
		s.log.Warn("could not write the buildkitd pid file", "err", err)
	}
	s.log.Info("buildkitd started", "pid", cmd.Process.Pid, "cmd", strings.Join(s.Command(), " "))
	return c, nil
}

// supervise waits until c answers, then until it exits or ctx ends. stopped
// is true when ctx ended and c has been stopped; err is then the error of
// stopping it.
func (s *Supervisor) supervise(ctx context.Context, c *child) (stopped bool, err error) {
	defer s.exited(c)
	if err := s.waitAnswer(ctx, c); err != nil {
		switch {
		case ctx.Err() != nil:
			return true, s.stop(c)
		case isExited(c):
			s.failed(fmt.Errorf("buildkitd exited before it answered: %v", c.err))
			return false, nil
		}
		s.failed(err)
		s.log.Error("buildkitd did not answer; stopping it", "pid", c.cmd.Process.Pid, "err", err)
		_ = s.stop(c)
		return false, nil
	}
	s.log.Info("buildkitd ready", "pid", c.cmd.Process.Pid, "address", s.endpoint.Address,
		"after", time.Since(c.started).Round(time.Millisecond))
	s.setUp(true)
	select {
	case <-c.exited:
		s.failed(fmt.Errorf("buildkitd exited: %v", c.err))
		return false, nil
	case <-ctx.Done():
		return true, s.stop(c)
	}
}

// waitAnswer polls the daemon until it answers, exits, ctx ends or
// ReadyTimeout passes.
func (s *Supervisor) waitAnswer(ctx context.Context, c *child) error {
	deadline := time.NewTimer(s.cfg.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
		last = s.cfg.ReadyCheck(pctx, s.endpoint)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.exited:
			return errors.New("exited")
		case <-deadline.C:
			return fmt.Errorf("no answer within %s: %w", s.cfg.ReadyTimeout, last)
		case <-tick.C:
		}
	}
}

func isExited(c *child) bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// stop ends c: SIGTERM, then SIGKILL after StopTimeout.
func (s *Supervisor) stop(c *child) error {
	if isExited(c) {
		return nil
	}
	pid := c.cmd.Process.Pid
	s.log.Info("stopping buildkitd", "pid", pid)
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !isExited(c) {
		s.log.Warn("could not send SIGTERM to buildkitd", "pid", pid, "err", err)
	}
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-c.exited:
		s.log.Info("buildkitd stopped", "pid", pid, "err", c.err)
		return nil
	case <-t.C:
	}
	s.log.Warn("buildkitd did not exit after SIGTERM; sending SIGKILL", "pid", pid, "waited", s.cfg.StopTimeout)
	if err := c.cmd.Process.Kill(); err != nil && !isExited(c) {
		return fmt.Errorf("kill buildkitd (pid %d): %w", pid, err)
	}
	<-c.exited
	s.log.Info("buildkitd killed", "pid", pid)
	return nil
}

// exited records that c is gone: no pid, no pid file, down.
func (s *Supervisor) exited(c *child) {
	<-c.exited
	s.mu.Lock()
	if s.pid == c.cmd.Process.Pid {
		s.pid = 0
	}
	s.mu.Unlock()
	if pid, err := readPidFile(s.pidFile); err == nil && pid == c.cmd.Process.Pid {
		_ = os.Remove(s.pidFile)
	}
	s.setUp(false)
}

func (s *Supervisor) failed(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

func (s *Supervisor) setUp(up bool) {
	s.mu.Lock()
	changed := s.up != up
	s.up = up
	if up {
		s.lastErr = nil
	}
	s.mu.Unlock()
	if up {
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
	}
	if changed && s.cfg.OnChange != nil {
		s.cfg.OnChange(up)
	}
}

// writePidFile writes pid to path atomically.
func writePidFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readPidFile reads a pid file written by writePidFile.
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// lineLogger logs each line the daemon writes.
type lineLogger struct {
	log *slog.Logger
	pid int

	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) setPid(pid int) {
	l.mu.Lock()
	l.pid = pid
	l.mu.Unlock()
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(l.buf[:i]), "\r"); line != "" {
			l.log.Info("buildkitd output", "pid", l.pid, "line", line)
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: log what there is
		l.log.Info("buildkitd output", "pid", l.pid, "line", string(l.buf))
		l.buf = l.buf[:0]
	}
	return len(p), nil
}
