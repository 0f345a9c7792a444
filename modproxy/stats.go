package modproxy

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is what one build got from the proxy. A hit is a request answered from the on-disk
// cache, a miss one that needed upstream.
type Stats struct {
	Hits, Misses int
	// Errors counts authenticated requests answered with an error status (for example
	// 404 for a version that does not exist or failed verification).
	Errors            int
	BytesFromCache    int64 // response bytes served from the cache
	BytesFromUpstream int64 // bytes fetched from upstream for the build
	UpstreamTime      time.Duration
}

// BuildStats returns the stats of a build so far (zero if the build made no request).
func (p *Proxy) BuildStats(buildID string) Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.builds[buildID]; s != nil {
		return *s
	}
	return Stats{}
}

// Forget drops a build's stats; call it when the build has ended.
func (p *Proxy) Forget(buildID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.builds, buildID)
	delete(p.private, buildID)
}

const (
	resultHit          = "hit"
	resultMiss         = "miss"
	resultError        = "error"
	resultUnauthorized = "unauthorized"
)

// record accounts one authenticated request to its build and the metrics.
func (p *Proxy) record(st *reqState, w *countingWriter) {
	var fromCache, fromUpstream int64
	result := resultHit
	switch {
	case w.status >= http.StatusBadRequest:
		result = resultError
	case st.fetched || st.sumdbFetched:
		result = resultMiss
		fromUpstream = st.downloadBytes
		if fromUpstream == 0 { // a list, query or sumdb answer: what came is what went
			fromUpstream = w.n
		}
	default:
		fromCache = w.n
	}
	p.metrics.requests.WithLabelValues(result).Inc()
	p.metrics.bytes.WithLabelValues("cache").Add(float64(fromCache))
	p.metrics.bytes.WithLabelValues("upstream").Add(float64(fromUpstream))

	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.builds[st.buildID]
	if s == nil {
		s = &Stats{}
		p.builds[st.buildID] = s
	}
	switch result {
	case resultHit:
		s.Hits++
	case resultMiss:
		s.Misses++
	case resultError:
		s.Errors++
	}
	s.BytesFromCache += fromCache
	s.BytesFromUpstream += fromUpstream
	s.UpstreamTime += st.upstreamTime
}

// metrics are the proxy's Prometheus collectors (namespace buildsvc, subsystem modproxy).
type metrics struct {
	requests         *prometheus.CounterVec
	bytes            *prometheus.CounterVec
	upstreamRequests prometheus.Counter
	cacheBytes       prometheus.GaugeFunc
}

func newMetrics(cacheBytes func() float64) *metrics {
	const ns, sub = "buildsvc", "modproxy"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Module proxy requests by result: hit (from the cache), miss (from upstream), error, unauthorized.",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_total",
			Help: "Module proxy bytes by source: served from the cache, or fetched from upstream.",
		}, []string{"source"}),
		upstreamRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_requests_total",
			Help: "HTTP requests the module proxy sent to upstream proxies and checksum databases.",
		}),
		cacheBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "cache_bytes",
			Help: "Bytes in the module proxy's on-disk cache.",
		}, cacheBytes),
	}
	for _, r := range []string{resultHit, resultMiss, resultError, resultUnauthorized} {
		m.requests.WithLabelValues(r)
	}
	for _, s := range []string{"cache", "upstream"} {
		m.bytes.WithLabelValues(s)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.bytes, m.upstreamRequests, m.cacheBytes}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			for _, d := range done {
				r.Unregister(d)
			}
			return err
		}
		done = append(done, c)
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}
