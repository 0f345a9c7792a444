package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Worker is one buildkitd worker of the server's pool as the metrics show
// it (package workers' Status).
type Worker struct {
	Name      string
	Healthy   bool
	Running   int
	Builds    int64
	DiskBytes int64
}

// WorkersFunc lists the pool's workers; it must not block.
type WorkersFunc func() []Worker

// QueueFunc counts the builds of the queue the server replicas share,
// waiting and running; it must honour its context's deadline.
type QueueFunc func(ctx context.Context) (queued, running int, err error)

// WithWorkers adds the worker pool's metrics: buildsvc_worker_up,
// buildsvc_worker_builds_running, buildsvc_worker_builds_total and
// buildsvc_worker_disk_usage_bytes, labelled by worker.
func WithWorkers(fn WorkersFunc) Option {
	return func(o *options) error {
		if fn == nil {
			return errors.New("workers function is nil")
		}
		o.workers = fn
		return nil
	}
}

// WithSharedQueue adds buildsvc_shared_queue_builds{state}: the builds
// waiting and running in the queue the replicas share (every replica
// reports the same).
func WithSharedQueue(fn QueueFunc) Option {
	return func(o *options) error {
		if fn == nil {
			return errors.New("queue function is nil")
		}
		o.queue = fn
		return nil
	}
}

type workersCollector struct {
	fn                        WorkersFunc
	up, running, builds, disk *prometheus.Desc
	queueFn                   QueueFunc
	queueBuilds, queueUp      *prometheus.Desc
	queueTimeout              time.Duration
}

func newWorkersCollector(fn WorkersFunc, q QueueFunc, timeout time.Duration) *workersCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &workersCollector{
		fn:           fn,
		up:           d("worker_up", "1 if the buildkitd worker answered its last health check and gets builds, 0 if it is out of the pool.", "worker"),
		running:      d("worker_builds_running", "Builds this server runs on the worker now.", "worker"),
		builds:       d("worker_builds_total", "Builds this server gave the worker since it started (a build run again on another worker counts on both).", "worker"),
		disk:         d("worker_disk_usage_bytes", "Size of the worker's cache records at the last health check that read it.", "worker"),
		queueFn:      q,
		queueBuilds:  d("shared_queue_builds", "Builds in the queue the server replicas share, by state (queued, running), across every replica.", "state"),
		queueUp:      d("shared_queue_up", "1 if the shared queue's database answered the last count within the timeout, 0 if not."),
		queueTimeout: timeout,
	}
}

func (c *workersCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.fn != nil {
		ch <- c.up
		ch <- c.running
		ch <- c.builds
		ch <- c.disk
	}
	if c.queueFn != nil {
		ch <- c.queueBuilds
		ch <- c.queueUp
	}
}

func (c *workersCollector) Collect(ch chan<- prometheus.Metric) {
	if c.fn != nil {
		for _, w := range c.fn() {
			up := 0.0
			if w.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, w.Name)
			ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(w.Running), w.Name)
			ch <- prometheus.MustNewConstMetric(c.builds, prometheus.CounterValue, float64(w.Builds), w.Name)
			ch <- prometheus.MustNewConstMetric(c.disk, prometheus.GaugeValue, float64(w.DiskBytes), w.Name)
		}
	}
	if c.queueFn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.queueTimeout)
		defer cancel()
		queued, running, err := c.queueFn(ctx)
		if err != nil {
			ch <- prometheus.MustNewConstMetric(c.queueUp, prometheus.GaugeValue, 0)
			return
		}
		ch <- prometheus.MustNewConstMetric(c.queueUp, prometheus.GaugeValue, 1)
		ch <- prometheus.MustNewConstMetric(c.queueBuilds, prometheus.GaugeValue, float64(queued), "queued")
		ch <- prometheus.MustNewConstMetric(c.queueBuilds, prometheus.GaugeValue, float64(running), "running")
	}
}
