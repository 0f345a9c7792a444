// Package metrics exposes the build service's Prometheus metrics.
//
// A *Metrics is a server.Observer: the server hands it every event of every
// build (in log order per build) and every dedup join, and it turns them into
// counters, gauges and histograms. It also carries the cleanup counters
// (CleanupRan) and, when given a disk-usage function (WithDiskUsage), a
// collector that asks buildkitd for its disk usage, at most once per
// sampling interval (WithDiskUsageInterval).
//
// Nothing is registered globally: New registers on the registry it is given.
// NewRegistry returns a registry that already holds the Go and process
// collectors, and Handler serves a registry on /metrics:
//
//	reg := metrics.NewRegistry()
//	m, err := metrics.New(reg, metrics.WithDiskUsage(func(ctx context.Context) ([]*client.UsageInfo, error) {
//		return bk.DiskUsage(ctx)
//	}))
//	...
//	mux.Handle("/metrics", metrics.Handler(reg))
//
// # Metrics
//
// Builds, from the event log:
//   - buildsvc_builds_total{state,reason}: builds that ended, by final state
//     (succeeded, failed, cancelled, interrupted) and the reason of the
//     build's error (BuildError.reason: COMPILE_ERROR, TIMEOUT, CANCELLED,
//     ...; empty for a build that succeeded). The series of every state and
//     reason the server gives exist from the start; a reason that is not
//     UPPER_SNAKE_CASE, or none, counts as INTERNAL.
//   - buildsvc_build_duration_seconds{state}: histogram of a build's duration,
//     from the time of its first state event to the time of its final state
//     event, by final state. Buckets from 1s to 1h.
//   - buildsvc_build_phase_duration_seconds{phase}: histogram of the time a
//     build spent in one phase (queued, resolving, building, pushing): from the
//     event that entered the state to the next state event with a different
//     state (QUEUED repeated with a new queue position stays in the phase). A
//     phase is observed when the build leaves it, so a build that fails while
//     queued observes queued and nothing else. Buckets from 100ms to 1h.
//   - buildsvc_builds_in_flight: builds now BUILDING or PUSHING.
//   - buildsvc_queue_depth: builds now QUEUED.
//   - buildsvc_vertices_total{cached}: build steps that completed, counted once
//     per vertex digest per build when the build ends; cached="true" when any
//     event of that step said its result came from the cache (BuildKit may
//     report an image step completed first and cached later). Steps of a
//     build that never ends are not counted. The cache hit ratio is
//     sum(rate(buildsvc_vertices_total{cached="true"}[5m])) / sum(rate(buildsvc_vertices_total[5m])).
//     A step that failed counts as cached="false".
//   - buildsvc_pushed_bytes_total: bytes of completed push progress (see
//     below).
//   - buildsvc_dedup_joins_total: requests that joined an identical in-flight
//     build (Joined).
//   - buildsvc_requests_refused_total{code}: build requests refused before a
//     build was queued, by gRPC code (Refused).
//
// The server (WithBuildInfo):
//   - buildsvc_build_info{version,revision,goversion,buildkit}: always 1.
//
// Cleanup (CleanupRan):
//   - buildsvc_cleanup_runs_total: cleanup runs.
//   - buildsvc_cleanup_freed_bytes_total{what}: bytes freed, what="buildkit"
//     (BuildKit's prune) or what="temp" (the server's temporary files).
//     what="module-proxy" and what="build-cache" (the stores' cleanups,
//     StoresCleaned).
//   - buildsvc_cleanup_builds_deleted_total: ended builds removed from the
//     history by retention. (A count of builds, not bytes, so it is a metric
//     of its own rather than a what="history" series of the bytes counter.)
//
// The build-cache store, from finished builds' results (their CacheUsage;
// the module proxy has buildsvc_modproxy_* metrics of its own):
//   - buildsvc_build_cache_requests_total{result}: lookups, result hit or
//     miss.
//   - buildsvc_build_cache_bytes_total{direction}: bytes read from and
//     written to the store.
//   - buildsvc_build_cache_puts_total: entries put.
//   - buildsvc_build_cache_store_bytes: the store's size after the last
//     cleanup run (BuildCacheStoreSize).
//
// buildkitd, asked at scrape time (only with WithDiskUsage):
//   - buildsvc_buildkitd_up: 1 when the disk-usage call succeeded within the
//     scrape timeout, 0 otherwise.
//   - buildsvc_buildkitd_disk_usage_bytes{type}: the sum of the Size of every
//     record BuildKit's DiskUsage returned, by record type (regular,
//     exec.cachemount, source.local, source.git.checkout, frontend, internal,
//     each present even at 0; "unknown" for a record without a type; the Go
//     module and build caches are exec.cachemount). Summed over all types it
//     is the total `buildctl du` prints. Left out when buildkitd is down.
//
// # Pushed bytes
//
// buildsvc_pushed_bytes_total adds, once per (build, vertex, status id), the
// byte count of a VertexStatus event that is completed (has a completion
// time) and whose id or name begins with "pushing": its current counter, or
// its total when current is 0. Pull progress (ids "sha256:...") and local
// transfers ("transferring") are never counted.
//
// BuildKit v0.34.2, the version this service uses, reports a push only as two
// statuses without byte counters ("pushing layers" and "pushing manifest for
// <ref>", both from progress.OneOff in util/push/push.go), so with it this
// counter stays at 0. It counts real bytes as soon as BuildKit reports push
// progress with counters, with no change here.
//
// # Tracking builds
//
// Phases, durations and the gauges need a small record per running build. A
// record is made by a build's first non-final state event and removed when
// the build ends: at its SUCCEEDED state event, or, for a build that
// failed, was cancelled or interrupted, at its error event, which comes
// right after the final state event and carries the reason. Until then the
// build stays in its phase, so that a scrape sees it either in flight (or
// queued) or counted, never neither; its duration runs to its final state
// event. Builds that a crash left unfinished are removed when the server
// marks them INTERRUPTED. Vertex and status events of a build without a
// record (one that ended, or that began before this Metrics saw it) are
// ignored. A final state event of a build without a record (followed by its
// error event) still counts in buildsvc_builds_total, but has no duration;
// an error event without a final state event before it counts nothing. As a
// safety net at most WithMaxTrackedBuilds records are kept; past that the
// oldest is dropped without being observed.
//
// Every method is safe for concurrent use and returns quickly: Event takes
// one mutex for a few map operations and never does I/O.
package metrics

import (
	"container/list"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

const namespace = "buildsvc"

// Defaults of the options.
const (
	DefaultDiskUsageTimeout  = 5 * time.Second
	DefaultDiskUsageInterval = 30 * time.Second
	DefaultMaxTrackedBuilds  = 10000
)

// buildBuckets are the buckets of buildsvc_build_duration_seconds, in
// seconds: from 1s (a fully cached build) to 1h.
var buildBuckets = []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// phaseBuckets are the buckets of buildsvc_build_phase_duration_seconds, in
// seconds: from 100ms (a short wait in the queue or a cached push) to 1h.
var phaseBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// phases names the phase of each non-final state.
var phases = map[buildv1.BuildState]string{
	buildv1.BuildState_BUILD_STATE_QUEUED:    "queued",
	buildv1.BuildState_BUILD_STATE_RESOLVING: "resolving",
	buildv1.BuildState_BUILD_STATE_BUILDING:  "building",
	buildv1.BuildState_BUILD_STATE_PUSHING:   "pushing",
}

// finals names each final state.
var finals = map[buildv1.BuildState]string{
	buildv1.BuildState_BUILD_STATE_SUCCEEDED:   "succeeded",
	buildv1.BuildState_BUILD_STATE_FAILED:      "failed",
	buildv1.BuildState_BUILD_STATE_CANCELLED:   "cancelled",
	buildv1.BuildState_BUILD_STATE_INTERRUPTED: "interrupted",
}

// ending is a final state and the reason a build ended in it with.
type ending struct {
	state  buildv1.BuildState
	reason string
}

// endings are the series of buildsvc_builds_total made from the start:
// success (no reason), a cancel, an interruption, and the reasons of failed
// builds the server gives (BuildError.reason in proto/build/v1/build.proto).
// A reason not listed here still counts, in a series made when it first
// ends a build.
var endings = func() []ending {
	out := []ending{
		{buildv1.BuildState_BUILD_STATE_SUCCEEDED, ""},
		{buildv1.BuildState_BUILD_STATE_CANCELLED, "CANCELLED"},
		{buildv1.BuildState_BUILD_STATE_INTERRUPTED, "INTERRUPTED"},
	}
	for _, r := range []string{"COMPILE_ERROR", "DOWNLOAD_ERROR", "GIT_AUTH", "GIT_NOT_FOUND", "GIT_UNAVAILABLE",
		"REGISTRY_AUTH", "BASE_NOT_FOUND", "PUSH_FAILED", "REGISTRY_UNAVAILABLE", "TIMEOUT", "BUILDER_LOST", "BUILDER_UNAVAILABLE",
		"HISTORY_UNAVAILABLE", otherReason} {
		out = append(out, ending{buildv1.BuildState_BUILD_STATE_FAILED, r})
	}
	return out
}()

// Option configures New.
type Option func(*options) error

type options struct {
	diskUsage         DiskUsageFunc
	diskUsageTimeout  time.Duration
	diskUsageInterval time.Duration
	maxTracked        int
	buildInfo         map[string]string
	workers           WorkersFunc
	queue             QueueFunc
}

// WithBuildInfo adds buildsvc_build_info, a gauge that is always 1, with
// what the server was built from as labels: version, revision, goversion
// and buildkit (package version reads them).
func WithBuildInfo(version, revision, goVersion, buildkit string) Option {
	return func(o *options) error {
		o.buildInfo = map[string]string{"version": version, "revision": revision, "goversion": goVersion, "buildkit": buildkit}
		return nil
	}
}

// WithDiskUsage adds the buildkitd collector (buildsvc_buildkitd_up and
// buildsvc_buildkitd_disk_usage_bytes), which calls fn on every scrape. fn
// must honour its context's deadline. Without this option there are no
// buildkitd metrics.
func WithDiskUsage(fn DiskUsageFunc) Option {
	return func(o *options) error {
		if fn == nil {
			return errors.New("disk usage function is nil")
		}
		o.diskUsage = fn
		return nil
	}
}

// WithDiskUsageTimeout sets how long one scrape waits for the disk-usage
// function before it reports buildkitd down. Default DefaultDiskUsageTimeout.
func WithDiskUsageTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("disk usage timeout %v is not positive", d)
		}
		o.diskUsageTimeout = d
		return nil
	}
}

// WithDiskUsageInterval sets how long an answer of the disk-usage function
// serves scrapes before it is asked again. Default
// DefaultDiskUsageInterval.
func WithDiskUsageInterval(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("disk usage interval %v is negative", d)
		}
		o.diskUsageInterval = d
		return nil
	}
}

// WithMaxTrackedBuilds bounds how many unfinished builds are tracked at once.
// Default DefaultMaxTrackedBuilds, far above any queue the server allows.
func WithMaxTrackedBuilds(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max tracked builds %d is not positive", n)
		}
		o.maxTracked = n
		return nil
	}
}

// Metrics turns build events into Prometheus metrics. It implements
// server.Observer. Make one with New.
type Metrics struct {
	builds        *prometheus.CounterVec // buildsvc_builds_total{state,reason}
	buildDuration map[buildv1.BuildState]prometheus.Observer
	phaseDuration map[buildv1.BuildState]prometheus.Observer
	vertexCached  prometheus.Counter
	vertexBuilt   prometheus.Counter
	pushedBytes   prometheus.Counter
	dedupJoins    prometheus.Counter
	refused       *prometheus.CounterVec
	cleanupRuns   prometheus.Counter
	cleanupFreed  *prometheus.CounterVec
	cleanupBuilds prometheus.Counter
	cacheRequests *prometheus.CounterVec // buildsvc_build_cache_requests_total{result}
	cacheBytes    *prometheus.CounterVec // buildsvc_build_cache_bytes_total{direction}
	cachePuts     prometheus.Counter
	cacheSize     prometheus.Gauge

	maxTracked int

	mu      sync.Mutex
	tracked map[string]*tracked
	order   *list.List // of *tracked, oldest first
	inState map[buildv1.BuildState]int
}

// tracked is what is kept of one unfinished build.
type tracked struct {
	id       string
	elem     *list.Element
	first    time.Time // time of the first state event
	state    buildv1.BuildState
	since    time.Time           // when state was entered
	vertices map[string]bool     // completed step digests -> cached, counted at the end
	pushes   map[string]struct{} // vertex + "\x00" + status id counted as pushed
	// ending is the final state of a build that did not succeed, from its
	// final state event at endAt, until its error event ends it.
	ending buildv1.BuildState
	endAt  time.Time
}

// New makes the build service's metrics and registers them on reg.
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: registerer is nil")
	}
	o := options{diskUsageTimeout: DefaultDiskUsageTimeout, diskUsageInterval: DefaultDiskUsageInterval, maxTracked: DefaultMaxTrackedBuilds}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}

	builds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "builds_total",
		Help:      "Builds that ended, by final state and the reason of their error (BuildError.reason; empty for a build that succeeded).",
	}, []string{"state", "reason"})
	buildDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "build_duration_seconds",
		Help:      "Time from a build's first state event to its final state event, by final state.",
		Buckets:   buildBuckets,
	}, []string{"state"})
	phaseDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "build_phase_duration_seconds",
		Help:      "Time a build spent in one phase (queued, resolving, building, pushing), observed when it left the phase.",
		Buckets:   phaseBuckets,
	}, []string{"phase"})
	vertices := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "vertices_total",
		Help:      "Build steps that completed, once per step per build, by whether the result came from the cache.",
	}, []string{"cached"})
	m := &Metrics{
		builds:        builds,
		buildDuration: map[buildv1.BuildState]prometheus.Observer{},
		phaseDuration: map[buildv1.BuildState]prometheus.Observer{},
		vertexCached:  vertices.WithLabelValues("true"),
		vertexBuilt:   vertices.WithLabelValues("false"),
		pushedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "pushed_bytes_total",
			Help:      "Bytes of completed push progress BuildKit reported (BuildKit v0.34.2 reports none).",
		}),
		dedupJoins: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "dedup_joins_total",
			Help:      "Requests that joined an identical queued or running build instead of starting one.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "requests_refused_total",
			Help:      "Build requests refused before a build was queued, by gRPC code (InvalidArgument, NotFound, Unauthenticated, PermissionDenied, ResourceExhausted, ...).",
		}, []string{"code"}),
		cleanupRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cleanup_runs_total",
			Help:      "Cleanup runs.",
		}),
		cleanupFreed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cleanup_freed_bytes_total",
			Help:      "Bytes freed by cleanup: buildkit by BuildKit's prune, temp by removing the server's temporary files.",
		}, []string{"what"}),
		cleanupBuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "cleanup_builds_deleted_total",
			Help:      "Ended builds removed from the history by cleanup.",
		}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "build_cache_requests_total",
			Help:      "Go build-cache (GOCACHEPROG) lookups in the service's store by finished builds: result hit or miss.",
		}, []string{"result"}),
		cacheBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "build_cache_bytes_total",
			Help:      "Bytes finished builds read from (direction read) and wrote to (written) the service's build-cache store.",
		}, []string{"direction"}),
		cachePuts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "build_cache_puts_total",
			Help:      "Entries finished builds put into the service's build-cache store.",
		}),
		cacheSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "build_cache_store_bytes",
			Help:      "Size of the service's build-cache store after the last cleanup run (0 until one ran).",
		}),
		maxTracked: o.maxTracked,
		tracked:    map[string]*tracked{},
		order:      list.New(),
		inState:    map[buildv1.BuildState]int{},
	}
	// Every series that can exist is made now, so it reads 0 before the
	// first build instead of being absent.
	for state, name := range finals {
		m.buildDuration[state] = buildDuration.WithLabelValues(name)
	}
	for _, e := range endings {
		builds.WithLabelValues(finals[e.state], e.reason)
	}
	for state, name := range phases {
		m.phaseDuration[state] = phaseDuration.WithLabelValues(name)
	}
	m.cleanupFreed.WithLabelValues("buildkit")
	m.cleanupFreed.WithLabelValues("temp")
	m.cleanupFreed.WithLabelValues("module-proxy")
	m.cleanupFreed.WithLabelValues("build-cache")
	for _, r := range []string{"hit", "miss"} {
		m.cacheRequests.WithLabelValues(r)
	}
	for _, d := range []string{"read", "written"} {
		m.cacheBytes.WithLabelValues(d)
	}

	inFlight := prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "builds_in_flight"),
		"Builds now building or pushing.", nil, nil)
	queueDepth := prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "queue_depth"),
		"Builds now queued.", nil, nil)
	// What the build events change is read as one view (see consistentView).
	fromEvents := &consistentView{
		mu:    &m.mu,
		cs:    []prometheus.Collector{builds, buildDuration, phaseDuration, vertices, m.pushedBytes},
		descs: []*prometheus.Desc{inFlight, queueDepth},
		gauges: func() []prometheus.Metric {
			return []prometheus.Metric{
				prometheus.MustNewConstMetric(inFlight, prometheus.GaugeValue,
					m.countLocked(buildv1.BuildState_BUILD_STATE_BUILDING, buildv1.BuildState_BUILD_STATE_PUSHING)),
				prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue,
					m.countLocked(buildv1.BuildState_BUILD_STATE_QUEUED)),
			}
		},
	}
	cs := []prometheus.Collector{fromEvents, m.dedupJoins, m.refused, m.cleanupRuns, m.cleanupFreed, m.cleanupBuilds,
		m.cacheRequests, m.cacheBytes, m.cachePuts, m.cacheSize}
	if o.diskUsage != nil {
		cs = append(cs, newBuildkitdCollector(o.diskUsage, o.diskUsageTimeout, o.diskUsageInterval))
	}
	if o.workers != nil || o.queue != nil {
		cs = append(cs, newWorkersCollector(o.workers, o.queue, o.diskUsageTimeout))
	}
	if o.buildInfo != nil {
		info := prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace:   namespace,
			Name:        "build_info",
			Help:        "Always 1; its labels say what the server was built from.",
			ConstLabels: o.buildInfo,
		})
		info.Set(1)
		cs = append(cs, info)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// NewRegistry returns a registry holding the standard Go runtime and process
// collectors, for New and Handler. Callers that bring their own registry add
// those collectors themselves if they want them.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics g gathers in the Prometheus exposition format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// Joined counts a request that joined the identical build buildID instead of
// starting one.
func (m *Metrics) Joined(buildID string) {
	m.dedupJoins.Inc()
}

// Refused counts a build request refused with code before a build was
// queued.
func (m *Metrics) Refused(code codes.Code) {
	m.refused.WithLabelValues(code.String()).Inc()
}

// CleanupRan records one cleanup run: buildkitBytes freed by BuildKit's
// prune, historyBuilds ended builds deleted from the history, and tempBytes
// of the server's temporary files removed. Call it once per run, also for a
// run that freed nothing. Negative values are taken as 0.
func (m *Metrics) CleanupRan(buildkitBytes, historyBuilds, tempBytes int64) {
	m.cleanupRuns.Inc()
	m.cleanupFreed.WithLabelValues("buildkit").Add(nonNegative(buildkitBytes))
	m.cleanupFreed.WithLabelValues("temp").Add(nonNegative(tempBytes))
	m.cleanupBuilds.Add(nonNegative(historyBuilds))
}

// StoresCleaned records what one cleanup run freed in the module proxy's
// cache and the build-cache store.
func (m *Metrics) StoresCleaned(moduleProxyBytes, buildCacheBytes int64) {
	m.cleanupFreed.WithLabelValues("module-proxy").Add(nonNegative(moduleProxyBytes))
	m.cleanupFreed.WithLabelValues("build-cache").Add(nonNegative(buildCacheBytes))
}

// BuildCacheStoreSize records the build-cache store's size after a
// cleanup run.
func (m *Metrics) BuildCacheStoreSize(bytes int64) { m.cacheSize.Set(nonNegative(bytes)) }

// cacheUsed records a finished build's use of the build-cache store.
func (m *Metrics) cacheUsed(u *buildv1.CacheUsage) {
	if u == nil {
		return
	}
	m.cacheRequests.WithLabelValues("hit").Add(nonNegative(u.GetBuildCacheHits()))
	m.cacheRequests.WithLabelValues("miss").Add(nonNegative(u.GetBuildCacheMisses()))
	m.cacheBytes.WithLabelValues("read").Add(nonNegative(u.GetBuildCacheBytesRead()))
	m.cacheBytes.WithLabelValues("written").Add(nonNegative(u.GetBuildCacheBytesWritten()))
	m.cachePuts.Add(nonNegative(u.GetBuildCachePuts()))
}

func nonNegative(n int64) float64 {
	if n < 0 {
		return 0
	}
	return float64(n)
}
