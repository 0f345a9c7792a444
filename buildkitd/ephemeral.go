package buildkitd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/buildkit/client"
)

// Files a Launcher keeps in its state directory, besides one directory per
// instance.
const (
	// LockName is the state directory's lock: one Launcher at a time uses
	// a state directory.
	LockName = ".launcher.lock"
)

// SystemCABundle is the CA bundle buildkitd's own git fetches trust (BuildKit
// runs git with no system gitconfig, so libcurl's compiled-in bundle is the
// only one that counts). See LauncherConfig.SystemCABundle.
const SystemCABundle = "/etc/ssl/certs/ca-certificates.crt"

// logTailLines is how much of a daemon's log a StartError carries.
const logTailLines = 40

// errStateDirInUse is returned by lockDir when another Launcher holds the
// state directory.
var errStateDirInUse = errors.New("state directory is in use by another launcher")

// ErrLauncherClosed is returned by Start after Close.
var ErrLauncherClosed = errors.New("buildkitd launcher is closed")

// instanceName is what Start accepts as an instance's name: it becomes the
// start of a directory name.
var instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)

// LauncherConfig configures a Launcher. NewLauncher checks it, so a bad
// one fails there, before anything starts. Zero values mean the defaults.
type LauncherConfig struct {
	// StateDir is the directory the instances are kept in, created if need
	// be. Required. It belongs to the Launcher: it is locked against other
	// Launchers, and every directory in it, left by an earlier process that
	// crashed or was killed, is removed by NewLauncher. Keep it short: each
	// instance's socket path must fit a sun_path.
	StateDir string
	// Binary is the buildkitd executable, a path or a name looked up in
	// PATH. Default DefaultBinary.
	Binary string
	// ConfigFile is the base buildkitd.toml of every instance. Each
	// instance runs with a copy whose root, [grpc] address (and
	// debugAddress) and [otel] socketPath are its own; the rest (workers, gc
	// policy, registry mirrors and their http, insecure and CA settings,
	// history) is kept. Default: no file, buildkitd's defaults.
	ConfigFile string
	// Args are more arguments for every buildkitd command line, after
	// --config. They must not set --root, --addr or --config: the Launcher
	// does.
	Args []string
	// Env are KEY=VALUE variables added to the daemon's environment, which
	// is otherwise this process's. PATH decides which runc buildkitd runs
	// (and which one the Launcher uses to remove build containers a killed
	// daemon left behind).
	Env []string
	// SystemCABundle, when set, is a PEM file that each daemon sees over
	// the SystemCABundle path: each runs in a mount namespace of its own in
	// which the file is bind-mounted (read-only) there, so that buildkitd's
	// git fetches over HTTPS trust its CAs: what the local stack does for
	// its buildkitd (scripts/up.sh). It needs unshare(1) and sh(1), and
	// root. Registry CAs need no such thing: they are in the config file.
	// The daemon's mounts then live only in its namespace and vanish with
	// it. It must be a regular file. Default: none, the host's bundle.
	SystemCABundle string
	// ReadyTimeout is how long Start waits for a daemon to answer. Default
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// StopTimeout is how long Instance.Close waits for a daemon to exit
	// after SIGTERM before it kills its process group. Default
	// DefaultStopTimeout.
	StopTimeout time.Duration
	// MaxInstances bounds the instances alive at once: Start waits (as long
	// as its context lets it) for one to close. Default 0: no bound.
	MaxInstances int
	// Logger is where the Launcher logs each start (with how long the
	// daemon took to answer), close and cleanup. Default nil: nothing is
	// logged. The daemons' own output goes to each instance's LogName.
	Logger *slog.Logger

	// ready replaces the readiness probe (tests). Default: Dial and Probe.
	ready func(ctx context.Context, e Endpoint) error
}

// check reports the first thing wrong with cfg that needs no file system.
func (cfg *LauncherConfig) check() error {
	switch {
	case cfg.StateDir == "":
		return errors.New("state directory is empty")
	case cfg.ReadyTimeout < 0:
		return fmt.Errorf("ready timeout %s: want 0 (the default) or more", cfg.ReadyTimeout)
	case cfg.StopTimeout < 0:
		return fmt.Errorf("stop timeout %s: want 0 (the default) or more", cfg.StopTimeout)
	case cfg.MaxInstances < 0:
		return fmt.Errorf("max instances %d: want 0 (no bound) or more", cfg.MaxInstances)
	}
	for _, a := range cfg.Args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "root" || name == "addr" || name == "config") {
			return fmt.Errorf("buildkitd argument %s is set by the launcher", a)
		}
	}
	for _, e := range cfg.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("buildkitd environment %q: want KEY=VALUE", e)
		}
	}
	return nil
}

// A Launcher starts throw-away buildkitd daemons, one per build: each
// Instance is a child process with an empty state directory, a socket and a
// log of its own, and the Launcher's config otherwise; closing it stops the
// daemon and removes every trace of it. Make one with NewLauncher.
type Launcher struct {
	cfg      LauncherConfig // defaults applied
	stateDir string
	binary   string
	base     []byte // the base config file's content
	runc     string // for removing build containers; "" if none found
	env      []string
	log      *slog.Logger
	slots    chan struct{} // nil: no bound
	lock     *os.File

	mu     sync.Mutex
	closed bool
	live   map[*Instance]struct{}
}

// NewLauncher checks cfg and makes a Launcher that keeps its instances in
// cfg.StateDir: it locks the directory and removes every leftover instance
// in it (its daemon killed, its build containers deleted, its mounts
// unmounted) before it returns. It starts no daemon; Start does.
func NewLauncher(cfg LauncherConfig) (*Launcher, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("buildkitd launcher: %w", err)
	}
	if cfg.SystemCABundle != "" {
		st, err := os.Stat(cfg.SystemCABundle)
		if err != nil {
			return nil, fmt.Errorf("buildkitd launcher: CA bundle: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("buildkitd launcher: CA bundle %s is not a file", cfg.SystemCABundle)
		}
	}
	setDefault(&cfg.Binary, DefaultBinary)
	setDefault(&cfg.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&cfg.StopTimeout, DefaultStopTimeout)
	if cfg.ready == nil {
		cfg.ready = dialAndProbe
	}
	cfg.Args = slices.Clone(cfg.Args) // l.env is a copy of cfg.Env
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("buildkitd launcher: buildkitd binary: %w", err)
	}
	l := &Launcher{
		cfg:    cfg,
		binary: bin,
		env:    append(os.Environ(), cfg.Env...),
		log:    cfg.Logger,
		live:   map[*Instance]struct{}{},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConfigFile != "" {
		if l.base, err = os.ReadFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("buildkitd launcher: %w", err)
		}
		if _, err := instanceConfig(l.base, "/x"); err != nil {
			return nil, fmt.Errorf("buildkitd launcher: %s: %w", cfg.ConfigFile, err)
		}
	}
	if cfg.MaxInstances > 0 {
		l.slots = make(chan struct{}, cfg.MaxInstances)
	}
	l.runc = lookPathIn("runc", envValue(l.env, "PATH"))

	stateDir := cfg.StateDir
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		return nil, fmt.Errorf("buildkitd launcher: %w", err)
	}
	// Mount points in mountinfo are real paths.
	if stateDir, err = filepath.Abs(stateDir); err == nil {
		stateDir, err = filepath.EvalSymlinks(stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("buildkitd launcher: %w", err)
	}
	l.stateDir = stateDir
	if l.lock, err = lockDir(filepath.Join(stateDir, LockName)); err != nil {
		return nil, fmt.Errorf("buildkitd launcher: lock %s: %w", stateDir, err)
	}
	if err := l.removeLeftovers(); err != nil {
		l.lock.Close()
		return nil, fmt.Errorf("buildkitd launcher: %w", err)
	}
	return l, nil
}

// envValue is the value of key in env (the last one wins, as in exec).
func envValue(env []string, key string) string {
	v := ""
	for _, e := range env {
		if k, val, ok := strings.Cut(e, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// removeLeftovers removes the instance directories of earlier processes.
func (l *Launcher) removeLeftovers() error {
	dirs, err := leftoverDirs(l.stateDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		l.log.Warn("removing leftover buildkitd instance", "dir", d)
		err := killLeftover(d)
		if err == nil {
			err = removeInstanceDir(context.Background(), l.log, l.runc, d)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("leftover %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// StateDir is the directory the instances are kept in.
func (l *Launcher) StateDir() string { return l.stateDir }

// Start starts a new daemon for name (letters, digits, '.', '_', '-'; at
// most 40 bytes; it only names the instance's directory,
// StateDir/name-RANDOM) and waits until it answers ListWorkers, at most the
// ready timeout and as long as ctx lets it. With a MaxInstances bound, it first
// waits for a free slot. When the daemon does not come up, Start stops it,
// removes everything it made and returns a *StartError with the tail of the
// daemon's log.
func (l *Launcher) Start(ctx context.Context, name string) (*Instance, error) {
	if !instanceName.MatchString(name) {
		return nil, fmt.Errorf("buildkitd instance name %q: want 1-40 of [A-Za-z0-9._-], starting with a letter or digit", name)
	}
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("buildkitd instance %s: waiting for a free slot: %w", name, context.Cause(ctx))
		}
	}
	inst, err := l.newInstance(name)
	if err != nil {
		l.release()
		return nil, err
	}
	if err := inst.start(); err != nil {
		return nil, inst.failed(ctx, err)
	}
	if err := inst.waitReady(ctx, l.cfg.ReadyTimeout, l.cfg.ready); err != nil {
		return nil, inst.failed(ctx, err)
	}
	inst.startDuration = time.Since(inst.started)
	l.log.Info("ephemeral buildkitd ready", "name", name, "pid", inst.pid, "dir", inst.dir,
		"after", inst.startDuration.Round(time.Millisecond))
	return inst, nil
}

// release frees a slot taken by Start.
func (l *Launcher) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// newInstance makes the instance's directory and config and registers it.
func (l *Launcher) newInstance(name string) (*Instance, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrLauncherClosed
	}
	dir, err := os.MkdirTemp(l.stateDir, name+"-")
	if err != nil {
		return nil, fmt.Errorf("buildkitd instance %s: %w", name, err)
	}
	inst := &Instance{
		l:      l,
		name:   name,
		dir:    dir,
		exited: make(chan struct{}),
		closed: make(chan struct{}),
	}
	if p := inst.socketPath(); len(p) > maxSocketPath {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("buildkitd instance %s: socket path %s is longer than %d bytes; use a shorter state directory or name", name, p, maxSocketPath)
	}
	cfg, err := instanceConfig(l.base, dir)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, ConfigName), cfg, 0o600)
	}
	if err == nil {
		err = os.Mkdir(inst.Root(), 0o711)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("buildkitd instance %s: %w", name, err)
	}
	l.live[inst] = struct{}{}
	return inst, nil
}

// forget unregisters a closed instance and frees its slot.
func (l *Launcher) forget(inst *Instance) {
	l.mu.Lock()
	_, ok := l.live[inst]
	delete(l.live, inst)
	l.mu.Unlock()
	if ok {
		l.release()
	}
}

// Close closes every live instance (see Instance.Close), makes further
// Starts fail with ErrLauncherClosed and unlocks the state directory. It
// may be called more than once.
func (l *Launcher) Close(ctx context.Context) error {
	l.mu.Lock()
	wasClosed := l.closed
	l.closed = true
	insts := make([]*Instance, 0, len(l.live))
	for i := range l.live {
		insts = append(insts, i)
	}
	l.mu.Unlock()
	errs := make([]error, len(insts))
	var wg sync.WaitGroup
	for n, i := range insts {
		wg.Go(func() { errs[n] = i.Close(ctx) })
	}
	wg.Wait()
	if !wasClosed {
		l.lock.Close()
	}
	return errors.Join(errs...)
}

// An Instance is one throw-away buildkitd started by Launcher.Start. Close
// it when the build is done.
type Instance struct {
	l    *Launcher
	name string
	dir  string

	cmd           *exec.Cmd
	pid           int
	started       time.Time
	startDuration time.Duration
	exited        chan struct{} // closed when the process has exited
	waitErr       error         // set before exited is closed

	closeOnce sync.Once
	closed    chan struct{} // closed when Close has finished
	closeErr  error
}

// Name is the name given to Start.
func (i *Instance) Name() string { return i.name }

// Dir is the instance's directory: its root, socket, config and log.
func (i *Instance) Dir() string { return i.dir }

// Root is the daemon's state directory (Dir/RootName), empty at the start.
func (i *Instance) Root() string { return filepath.Join(i.dir, RootName) }

// Address is where the daemon listens: unix://Dir/SocketName.
func (i *Instance) Address() string { return "unix://" + i.socketPath() }

func (i *Instance) socketPath() string { return filepath.Join(i.dir, SocketName) }

// Endpoint is Address as an Endpoint, for Dial.
func (i *Instance) Endpoint() Endpoint { return Endpoint{Address: i.Address()} }

// Client dials the daemon (see Dial). The caller closes the client, before
// closing the instance.
func (i *Instance) Client(ctx context.Context) (*client.Client, error) {
	return Dial(ctx, i.Endpoint())
}

// LogFile is the daemon's output. It is removed with the instance.
func (i *Instance) LogFile() string { return filepath.Join(i.dir, LogName) }

// Pid is the daemon's process id.
func (i *Instance) Pid() int { return i.pid }

// StartDuration is how long the daemon took from its start to its first
// answer.
func (i *Instance) StartDuration() time.Duration { return i.startDuration }

// Exited is closed when the daemon's process has exited, whether by Close
// or on its own (a crash mid-build).
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// start starts the daemon process.
func (i *Instance) start() error {
	l := i.l
	logf, err := os.OpenFile(i.LogFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	args := append([]string{"--config", filepath.Join(i.dir, ConfigName)}, l.cfg.Args...)
	bin := l.binary
	if l.cfg.SystemCABundle != "" {
		// unshare and sh exec in the same process: the pid is buildkitd's.
		args = append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"`,
			"sh", l.cfg.SystemCABundle, SystemCABundle, bin}, args...)
		if bin, err = exec.LookPath("unshare"); err != nil {
			return fmt.Errorf("system CA bundle: %w", err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = i.dir
	cmd.Env = l.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	i.started = time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	i.cmd, i.pid = cmd, cmd.Process.Pid
	go func() {
		i.waitErr = cmd.Wait()
		close(i.exited)
	}()
	if err := writePidFile(filepath.Join(i.dir, PidFileName), i.pid); err != nil {
		l.log.Warn("could not write the buildkitd pid file", "dir", i.dir, "err", err)
	}
	return nil
}

// waitReady polls the daemon until it answers, exits, ctx ends or timeout
// passes.
func (i *Instance) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context, Endpoint) error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error = errors.New("no socket yet")
	for {
		if _, err := os.Stat(i.socketPath()); err == nil {
			pctx, cancel := context.WithTimeout(ctx, DefaultProbeTimeout)
			last = ready(pctx, i.Endpoint())
			cancel()
			if last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for an answer: %w", context.Cause(ctx))
		case <-i.exited:
			return fmt.Errorf("exited before it answered: %v", i.waitErr)
		case <-deadline.C:
			return fmt.Errorf("no answer within %s: %w", timeout, last)
		case <-tick.C:
		}
	}
}

// failed cleans up after a start that did not come up and returns the
// error to give.
func (i *Instance) failed(ctx context.Context, err error) error {
	tail := logTail(i.LogFile(), logTailLines)
	if cerr := i.Close(context.WithoutCancel(ctx)); cerr != nil {
		err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
	}
	i.l.log.Error("ephemeral buildkitd did not start", "name", i.name, "err", err)
	return &StartError{Name: i.name, Err: err, LogTail: tail}
}

// Close stops the daemon (SIGTERM; after the stop timeout, or when ctx
// ends, SIGKILL to its process group), deletes the build containers it
// left, unmounts whatever is still mounted under its directory and removes
// the directory. ctx only shortens the wait for a graceful exit: the
// cleanup is done in any case. Close may be called more than once and from
// several goroutines; each call returns the first one's result once it is
// done.
func (i *Instance) Close(ctx context.Context) error {
	i.closeOnce.Do(func() {
		defer close(i.closed)
		t0 := time.Now()
		i.closeErr = i.close(ctx)
		i.l.forget(i)
		if i.closeErr != nil {
			i.l.log.Error("closing ephemeral buildkitd", "name", i.name, "dir", i.dir, "err", i.closeErr)
			return
		}
		i.l.log.Info("ephemeral buildkitd closed", "name", i.name, "pid", i.pid,
			"took", time.Since(t0).Round(time.Millisecond))
	})
	<-i.closed
	return i.closeErr
}

func (i *Instance) close(ctx context.Context) error {
	var errs []error
	if i.cmd != nil {
		if err := i.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeInstanceDir(context.WithoutCancel(ctx), i.l.log, i.l.runc, i.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stop ends the daemon and waits until it has exited.
func (i *Instance) stop(ctx context.Context) error {
	select {
	case <-i.exited:
		return nil
	default:
	}
	if err := i.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		i.l.log.Warn("could not send SIGTERM to buildkitd", "pid", i.pid, "err", err)
	}
	t := time.NewTimer(i.l.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-i.exited:
		// Not its process group: the pid may already be reused. Build
		// containers (runc runs in groups of its own) are removed next.
		return nil
	case <-t.C:
		i.l.log.Warn("buildkitd did not exit after SIGTERM; killing its process group", "pid", i.pid, "waited", i.l.cfg.StopTimeout)
	case <-ctx.Done():
		i.l.log.Warn("buildkitd close cancelled; killing its process group", "pid", i.pid)
	}
	if err := killGroup(i.pid); err != nil {
		return fmt.Errorf("kill buildkitd %d: %w", i.pid, err)
	}
	<-i.exited
	return nil
}

// StartError is Start's error when a daemon did not come up: why, and the
// end of the daemon's log (which is removed with the instance).
type StartError struct {
	// Name is the instance's name.
	Name string
	// Err is why it did not come up.
	Err error
	// LogTail is the last lines of the daemon's output.
	LogTail string
}

// Error gives the cause and the log's tail.
func (e *StartError) Error() string {
	msg := fmt.Sprintf("buildkitd instance %s did not start: %v", e.Name, e.Err)
	if e.LogTail != "" {
		msg += "\nbuildkitd log (last lines):\n" + e.LogTail
	}
	return msg
}

// Unwrap returns Err.
func (e *StartError) Unwrap() error { return e.Err }
