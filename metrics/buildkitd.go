package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/prometheus/client_golang/prometheus"
)

// DiskUsageFunc returns buildkitd's cache records, as
// (*client.Client).DiskUsage does:
//
//	func(ctx context.Context) ([]*client.UsageInfo, error) { return c.DiskUsage(ctx) }
type DiskUsageFunc func(ctx context.Context) ([]*client.UsageInfo, error)

// recordTypes are the record types BuildKit v0.34.2 reports; each has a
// disk-usage series, 0 when it has no records.
var recordTypes = []client.UsageRecordType{
	client.UsageRecordTypeInternal,
	client.UsageRecordTypeFrontend,
	client.UsageRecordTypeLocalSource,
	client.UsageRecordTypeGitCheckout,
	client.UsageRecordTypeCacheMount,
	client.UsageRecordTypeRegular,
}

// buildkitdCollector asks buildkitd for its disk usage at most once per
// interval: a scrape within the interval of the last answer reads that
// answer (DiskUsage walks every cache record, too costly for every
// scrape). A failed call is not kept: the next scrape asks again, so a
// buildkitd that comes back shows up at once.
type buildkitdCollector struct {
	diskUsage DiskUsageFunc
	timeout   time.Duration
	interval  time.Duration
	now       func() time.Time
	up        *prometheus.Desc
	usage     *prometheus.Desc

	mu      sync.Mutex // one call at a time; scrapes meanwhile wait for it
	sampled time.Time
	records []*client.UsageInfo
}

func newBuildkitdCollector(fn DiskUsageFunc, timeout, interval time.Duration) *buildkitdCollector {
	return &buildkitdCollector{
		diskUsage: fn,
		timeout:   timeout,
		interval:  interval,
		now:       time.Now,
		up: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "buildkitd", "up"),
			"1 if buildkitd answered its last disk-usage call within the timeout (asked at most once per sampling interval), 0 if not.",
			nil, nil),
		usage: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "buildkitd", "disk_usage_bytes"),
			"Size of buildkitd's cache records, by record type, as BuildKit's DiskUsage reports it.",
			[]string{"type"}, nil),
	}
}

func (c *buildkitdCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.usage
}

// sample returns buildkitd's records: the last answer if it is younger
// than the interval, else a new one.
func (c *buildkitdCollector) sample() ([]*client.UsageInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sampled.IsZero() && c.now().Sub(c.sampled) < c.interval {
		return c.records, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	records, err := c.diskUsage(ctx)
	if err != nil {
		c.sampled = time.Time{}
		return nil, err
	}
	c.sampled, c.records = c.now(), records
	return records, nil
}

func (c *buildkitdCollector) Collect(ch chan<- prometheus.Metric) {
	records, err := c.sample()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	sizes := make(map[client.UsageRecordType]int64, len(recordTypes))
	for _, t := range recordTypes {
		sizes[t] = 0
	}
	for _, r := range records {
		if r == nil || r.Size <= 0 {
			continue
		}
		t := r.RecordType
		if t == "" {
			t = "unknown"
		}
		sizes[t] += r.Size
	}
	for t, n := range sizes {
		ch <- prometheus.MustNewConstMetric(c.usage, prometheus.GaugeValue, float64(n), string(t))
	}
}
