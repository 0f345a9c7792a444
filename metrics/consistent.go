package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// consistentView collects metrics that change together, under one mutex, as one
// consistent view. Prometheus collects the collectors of a scrape
// concurrently and reads a counter's value when it writes it, so without
// this a scrape taken while a build ends could show it both counted in
// buildsvc_builds_total and still in buildsvc_builds_in_flight.
//
// Every change to the metrics of cs must happen with mu held; gauges is
// called with mu held and returns metrics computed from the same state.
type consistentView struct {
	mu     *sync.Mutex
	cs     []prometheus.Collector
	descs  []*prometheus.Desc // of what gauges returns
	gauges func() []prometheus.Metric
}

// Describe implements prometheus.Collector.
func (s *consistentView) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.cs {
		c.Describe(ch)
	}
	for _, d := range s.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It reads every value with mu
// held and sends them after letting go of it, so a slow scrape never holds
// up the events that change them.
func (s *consistentView) Collect(ch chan<- prometheus.Metric) {
	var out []prometheus.Metric
	s.mu.Lock()
	inner := make(chan prometheus.Metric)
	go func() {
		defer close(inner)
		for _, c := range s.cs {
			c.Collect(inner)
		}
	}()
	for m := range inner {
		f := frozen{desc: m.Desc(), m: &dto.Metric{}}
		if err := m.Write(f.m); err != nil {
			out = append(out, prometheus.NewInvalidMetric(m.Desc(), err))
			continue
		}
		out = append(out, f)
	}
	out = append(out, s.gauges()...)
	s.mu.Unlock()
	for _, m := range out {
		ch <- m
	}
}

// frozen is a metric's value as it was when it was read.
type frozen struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (f frozen) Desc() *prometheus.Desc { return f.desc }

func (f frozen) Write(out *dto.Metric) error {
	proto.Reset(out)
	proto.Merge(out, f.m)
	return nil
}
