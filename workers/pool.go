// Package workers is the pool of buildkitd workers that builds run on.
//
// Each build asks for a worker by a key (the service uses the git
// repository) and gets the one that rendezvous hashing (highest random
// weight) ranks first for that key, so that a repository's module and build
// caches stay hot on one worker while the keys spread evenly over all of
// them; adding or losing a worker moves only the keys it gains or had. Load
// is bounded: a worker running its limit of builds is skipped for the next
// in the key's order. A health check asks every worker, at an interval,
// whether it answers and has a worker to build on (BuildKit's ListWorkers),
// and how much disk its cache holds; a worker that does not answer is left
// out until it does, and one that keeps losing builds is left out for a
// while even if it answers.
//
// The pool knows nothing of builds: it hands out connections (of any type
// C that can be probed) and takes them back with the build's outcome.
package workers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// Conn is what the pool asks of a connection to a worker: BuildKit's
// client (*client.Client) has these methods.
type Conn interface {
	// ListWorkers lists the daemon's workers; the health check calls it.
	ListWorkers(ctx context.Context, opts ...client.ListWorkersOption) ([]*client.WorkerInfo, error)
	// DiskUsage lists the daemon's cache records; the health check sums
	// their sizes.
	DiskUsage(ctx context.Context, opts ...client.DiskUsageOption) ([]*client.UsageInfo, error)
	// Close ends the connection.
	Close() error
}

// ErrNoWorker is why Acquire gave up: no worker was healthy (or none had
// room) before its context ended.
var ErrNoWorker = errors.New("no healthy buildkitd worker")

// Defaults of Config.
const (
	DefaultCheckInterval = 5 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	// DefaultLossLimit builds lost in a row take a worker out even though
	// it answers its health check.
	DefaultLossLimit = 2
	// DefaultQuarantine is how long such a worker stays out.
	DefaultQuarantine = 30 * time.Second
	// diskEvery: the disk usage is read every diskEvery-th check (it walks
	// every cache record).
	diskEvery = 6
)

// Config configures a Pool.
type Config[C Conn] struct {
	// Endpoints are the workers, for a fixed pool.
	Endpoints []buildkitd.Endpoint
	// Resolve, if set, lists the workers at every check instead (e.g. the
	// addresses a DNS name resolves to); workers it no longer lists leave
	// the pool once their builds are done.
	Resolve func(ctx context.Context) ([]buildkitd.Endpoint, error)
	// Dial connects to a worker. Required.
	Dial func(ctx context.Context, e buildkitd.Endpoint) (C, error)
	// MaxBuilds is how many builds one worker runs at once. 0 bounds each
	// worker to 1.25 times its share of TotalBuilds (rounded up) over the
	// healthy workers, or sets no bound if TotalBuilds is 0 too.
	MaxBuilds int
	// TotalBuilds is how many builds the pool's user runs at once, for
	// the default MaxBuilds.
	TotalBuilds int
	// CheckInterval is the time between health checks of a healthy
	// worker; one that is down is checked every second (or every
	// CheckInterval if that is shorter). Default DefaultCheckInterval.
	CheckInterval time.Duration
	// ProbeTimeout bounds one check of one worker. Default
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// LossLimit and Quarantine: a worker that lost LossLimit builds in a
	// row (Release with Lost) is out for Quarantine. Defaults
	// DefaultLossLimit and DefaultQuarantine.
	LossLimit  int
	Quarantine time.Duration
	// Logger gets the workers' health changes. Default slog.Default().
	Logger *slog.Logger
	// OnChange, if set, is called after a check that changed how many
	// workers are healthy, with the new count and the pool's size.
	OnChange func(healthy, total int)
}

// Status is one worker as the pool sees it.
type Status struct {
	// Name is the worker's name in build records: its address.
	Name string
	// Healthy is whether builds are sent to it.
	Healthy bool
	// Running is how many builds it runs now.
	Running int
	// Builds is how many builds it was given since the server started.
	Builds int64
	// Error is why it is not healthy; empty if it is.
	Error string
	// DiskBytes is its cache's size at the last check that read it.
	DiskBytes int64
	// CheckedAt is when it was last checked.
	CheckedAt time.Time
}

// worker is one member of the pool; Pool.mu guards it.
type worker[C Conn] struct {
	name     string
	endpoint buildkitd.Endpoint
	conn     C
	dialed   bool
	healthy  bool
	err      error
	running  int
	builds   int64
	losses   int       // builds lost in a row
	outUntil time.Time // quarantined until
	disk     int64
	checked  time.Time
	gone     bool // no longer listed by Resolve
}

// Pool hands out the workers. Make one with New; Run checks their health.
type Pool[C Conn] struct {
	cfg Config[C]

	mu      sync.Mutex
	workers map[string]*worker[C]
	changed chan struct{} // closed and replaced when a worker frees up or comes back
	checks  int
	kick    chan struct{}
}

// New checks cfg and makes the pool. Its workers count as healthy only
// once a check says so: call Check (or Run) before builds need them.
func New[C Conn](cfg Config[C]) (*Pool[C], error) {
	if cfg.Dial == nil {
		return nil, errors.New("workers: Dial is required")
	}
	if len(cfg.Endpoints) == 0 && cfg.Resolve == nil {
		return nil, errors.New("workers: no buildkitd endpoints")
	}
	if cfg.MaxBuilds < 0 || cfg.TotalBuilds < 0 || cfg.CheckInterval < 0 || cfg.ProbeTimeout < 0 || cfg.LossLimit < 0 || cfg.Quarantine < 0 {
		return nil, errors.New("workers: limits and intervals must not be negative")
	}
	for _, e := range cfg.Endpoints {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("workers: %w", err)
		}
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.LossLimit == 0 {
		cfg.LossLimit = DefaultLossLimit
	}
	if cfg.Quarantine == 0 {
		cfg.Quarantine = DefaultQuarantine
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Pool[C]{cfg: cfg, workers: map[string]*worker[C]{}, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
	p.setEndpoints(cfg.Endpoints)
	return p, nil
}

// setEndpoints makes the pool's members those of es: new ones are added
// (not yet healthy), missing ones marked gone. p.mu must not be held.
func (p *Pool[C]) setEndpoints(es []buildkitd.Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	listed := map[string]bool{}
	for _, e := range es {
		listed[e.Address] = true
		if w, ok := p.workers[e.Address]; ok {
			w.gone = false
			continue
		}
		p.workers[e.Address] = &worker[C]{name: e.Address, endpoint: e, err: errors.New("not checked yet")}
	}
	for name, w := range p.workers {
		if !listed[name] {
			w.gone = true
		}
	}
}

// Lease is a worker given to one build.
type Lease[C Conn] struct {
	// Name is the worker's name, for the build's record and events.
	Name string
	// Conn is the connection to it.
	Conn C

	p    *Pool[C]
	once sync.Once
}

// Outcome is how a build ended on its worker, for Release.
type Outcome int

const (
	// Done: the build ended in a way that says nothing against the worker
	// (succeeded, or failed for a reason of its own).
	Done Outcome = iota
	// Lost: the worker went away during the build.
	Lost
)

// Release gives the worker back. A Lost outcome has the worker checked at
// once; LossLimit of them in a row take it out for Quarantine. Release may
// be called more than once; only the first counts.
func (l *Lease[C]) Release(o Outcome) {
	l.once.Do(func() { l.p.release(l.Name, o) })
}

func (p *Pool[C]) release(name string, o Outcome) {
	p.mu.Lock()
	w := p.workers[name]
	if w != nil {
		w.running--
		switch o {
		case Lost:
			w.losses++
			if w.losses >= p.cfg.LossLimit {
				w.healthy, w.outUntil = false, time.Now().Add(p.cfg.Quarantine)
				w.err = fmt.Errorf("lost %d builds in a row; out until %s", w.losses, w.outUntil.Format(time.RFC3339))
				p.cfg.Logger.Warn("buildkitd worker keeps losing builds; taken out", "worker", name, "lost", w.losses, "for", p.cfg.Quarantine)
			}
		default:
			w.losses = 0
		}
		if w.gone && w.running == 0 {
			p.drop(w)
		}
	}
	p.broadcast()
	p.mu.Unlock()
	if o == Lost {
		p.Kick()
	}
}

// drop removes a gone worker with no builds; p.mu is held.
func (p *Pool[C]) drop(w *worker[C]) {
	delete(p.workers, w.name)
	if w.dialed {
		go w.conn.Close()
	}
}

// broadcast wakes the builds waiting for a worker; p.mu is held.
func (p *Pool[C]) broadcast() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// score is w's rendezvous weight for key.
func score(key, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return mix(h.Sum64())
}

// mix spreads the bits of an FNV hash (splitmix64's finaliser): FNV's last
// bytes otherwise barely reach the high bits that decide the order.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Order is the pool's workers in key's rendezvous order, best first,
// healthy or not.
func (p *Pool[C]) Order(key string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.order(key)
}

// order: p.mu is held.
func (p *Pool[C]) order(key string) []string {
	names := make([]string, 0, len(p.workers))
	for name, w := range p.workers {
		if !w.gone {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		sa, sb := score(key, a), score(key, b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return cmp.Compare(a, b)
	})
	return names
}

// Acquire gives the build of key a worker: the first healthy one in key's
// order that has room, preferring those not in avoid (the workers a retry
// should not go back to; if only they are healthy, one of them is used).
// While none is healthy or all are full it waits, until ctx ends: then the
// error wraps ErrNoWorker and ctx's cause. waiting, if set, is called once
// when Acquire starts to wait.
func (p *Pool[C]) Acquire(ctx context.Context, key string, avoid []string, waiting func(why string)) (*Lease[C], error) {
	told := false
	for {
		p.mu.Lock()
		w, why := p.pick(key, avoid)
		if w != nil {
			w.running++
			w.builds++
			l := &Lease[C]{Name: w.name, Conn: w.conn, p: p}
			p.mu.Unlock()
			return l, nil
		}
		changed := p.changed
		p.mu.Unlock()
		if !told && waiting != nil {
			told = true
			waiting(why)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%s): %w", ErrNoWorker, why, context.Cause(ctx))
		}
	}
}

// limit is the most builds one worker runs while healthy workers are
// healthy; 0 is no limit.
func (p *Pool[C]) limit(healthy int) int {
	switch {
	case p.cfg.MaxBuilds > 0:
		return p.cfg.MaxBuilds
	case p.cfg.TotalBuilds > 0 && healthy > 0:
		return (5*p.cfg.TotalBuilds + 4*healthy - 1) / (4 * healthy)
	}
	return 0
}

// pick is key's worker, or nil and why there is none; p.mu is held.
func (p *Pool[C]) pick(key string, avoid []string) (*worker[C], string) {
	var fallback *worker[C]
	healthy := 0
	for _, w := range p.workers {
		if w.healthy && w.dialed && !w.gone {
			healthy++
		}
	}
	limit := p.limit(healthy)
	for _, name := range p.order(key) {
		w := p.workers[name]
		if !w.healthy || !w.dialed {
			continue
		}
		if limit > 0 && w.running >= limit {
			continue
		}
		if slices.Contains(avoid, name) {
			if fallback == nil {
				fallback = w
			}
			continue
		}
		return w, ""
	}
	if fallback != nil {
		return fallback, ""
	}
	if healthy == 0 {
		return nil, "no buildkitd worker is healthy"
	}
	return nil, fmt.Sprintf("all %d healthy buildkitd workers run their limit of %d builds", healthy, limit)
}

// Status lists the workers, by name.
func (p *Pool[C]) Status() []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Status, 0, len(p.workers))
	for _, w := range p.workers {
		if w.gone {
			continue
		}
		s := Status{Name: w.name, Healthy: w.healthy, Running: w.running, Builds: w.builds, DiskBytes: w.disk, CheckedAt: w.checked}
		if !w.healthy && w.err != nil {
			s.Error = w.err.Error()
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Healthy is how many workers are healthy.
func (p *Pool[C]) Healthy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healthyLocked()
}

// Each calls fn with every healthy worker's connection, one at a time, and
// joins their errors (the cleanup prunes every worker this way).
func (p *Pool[C]) Each(ctx context.Context, fn func(ctx context.Context, name string, c C) error) error {
	p.mu.Lock()
	var ws []*worker[C]
	for _, w := range p.workers {
		if w.healthy && w.dialed && !w.gone {
			ws = append(ws, w)
		}
	}
	p.mu.Unlock()
	slices.SortFunc(ws, func(a, b *worker[C]) int { return cmp.Compare(a.name, b.name) })
	var errs []error
	for _, w := range ws {
		if err := fn(ctx, w.name, w.conn); err != nil {
			errs = append(errs, fmt.Errorf("worker %s: %w", w.name, err))
		}
	}
	return errors.Join(errs...)
}

// Kick asks Run for a check now.
func (p *Pool[C]) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run checks the workers until ctx ends: at once, then every
// CheckInterval, every second while one is down, and when kicked. It
// closes the connections when it returns.
func (p *Pool[C]) Run(ctx context.Context) {
	defer p.closeAll()
	for {
		p.Check(ctx)
		wait := p.cfg.CheckInterval
		if p.Healthy() < len(p.Status()) {
			wait = min(wait, time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-time.After(wait):
		}
	}
}

func (p *Pool[C]) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.workers {
		if w.dialed {
			_ = w.conn.Close()
			w.dialed, w.healthy = false, false
		}
	}
}

// Check checks every worker once, in parallel, and updates their health.
func (p *Pool[C]) Check(ctx context.Context) {
	if p.cfg.Resolve != nil {
		es, err := p.cfg.Resolve(ctx)
		if err != nil {
			p.cfg.Logger.Warn("listing the buildkitd workers failed; keeping the last list", "err", err)
		} else {
			p.setEndpoints(es)
		}
	}
	p.mu.Lock()
	p.checks++
	readDisk := p.checks%diskEvery == 1
	ws := make([]*worker[C], 0, len(p.workers))
	for _, w := range p.workers {
		if !w.gone {
			ws = append(ws, w)
		}
	}
	before := p.healthyLocked()
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.check(ctx, w, readDisk)
		}()
	}
	wg.Wait()

	p.mu.Lock()
	after := p.healthyLocked()
	if after != before {
		p.broadcast()
	}
	total := 0
	for _, w := range p.workers {
		if !w.gone {
			total++
		}
	}
	p.mu.Unlock()
	if after != before && p.cfg.OnChange != nil {
		p.cfg.OnChange(after, total)
	}
}

func (p *Pool[C]) healthyLocked() int {
	n := 0
	for _, w := range p.workers {
		if w.healthy && !w.gone {
			n++
		}
	}
	return n
}

// check probes one worker, dialling it first if need be.
func (p *Pool[C]) check(ctx context.Context, w *worker[C], readDisk bool) {
	p.mu.Lock()
	conn, dialed := w.conn, w.dialed
	p.mu.Unlock()
	var err error
	if !dialed {
		// Dial does not wait for the daemon (BuildKit's client connects
		// lazily and reconnects): it fails only on a bad endpoint.
		if conn, err = p.cfg.Dial(ctx, w.endpoint); err == nil {
			dialed = true
		}
	}
	var disk int64 = -1
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.ProbeTimeout)
		err = probe(pctx, conn)
		if err == nil && readDisk {
			if du, derr := conn.DiskUsage(pctx); derr == nil {
				disk = 0
				for _, u := range du {
					disk += u.Size
				}
			} else {
				err = fmt.Errorf("buildkitd disk usage: %w", derr)
			}
		}
		cancel()
	}
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w.conn, w.dialed, w.checked = conn, dialed, time.Now()
	if disk >= 0 {
		w.disk = disk
	}
	was := w.healthy
	switch {
	case err != nil:
		w.healthy, w.err = false, err
	case time.Now().Before(w.outUntil):
		w.healthy = false // quarantined: w.err says why
	default:
		w.healthy, w.err = true, nil
	}
	switch {
	case was && !w.healthy:
		p.cfg.Logger.Warn("buildkitd worker taken out of the pool", "worker", w.name, "err", w.err)
	case !was && w.healthy:
		p.cfg.Logger.Info("buildkitd worker healthy", "worker", w.name)
	}
}

// probe reports whether the daemon answers and has a worker to build on.
func probe(ctx context.Context, c Conn) error {
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		return fmt.Errorf("list buildkitd workers: %w", err)
	}
	if len(ws) == 0 {
		return errors.New("buildkitd has no workers")
	}
	return nil
}
