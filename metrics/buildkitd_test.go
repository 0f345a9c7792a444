package metrics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/prometheus/client_golang/prometheus"
)

// readBuildkitd returns buildsvc_buildkitd_up (-1 if absent) and the disk
// usage by type.
func readBuildkitd(t *testing.T, g prometheus.Gatherer) (float64, map[string]float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	up, usage := -1.0, map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			switch mf.GetName() {
			case "buildsvc_buildkitd_up":
				up = mt.GetGauge().GetValue()
			case "buildsvc_buildkitd_disk_usage_bytes":
				usage[label(mt, "type")] = mt.GetGauge().GetValue()
			}
		}
	}
	return up, usage
}

func TestBuildkitdCollector(t *testing.T) {
	records := []*client.UsageInfo{
		{ID: "a", Size: 1000, RecordType: client.UsageRecordTypeRegular},
		{ID: "b", Size: 24, RecordType: client.UsageRecordTypeRegular, InUse: true},
		{ID: "gomod", Size: 5 << 20, RecordType: client.UsageRecordTypeCacheMount},
		{ID: "gocache", Size: 7 << 20, RecordType: client.UsageRecordTypeCacheMount, Shared: true},
		{ID: "git", Size: 300, RecordType: client.UsageRecordTypeGitCheckout},
		{ID: "x", Size: 9, RecordType: ""},
		{ID: "unsized", Size: -1, RecordType: client.UsageRecordTypeRegular},
		nil,
	}
	tests := []struct {
		name   string
		du     DiskUsageFunc
		wantUp float64
		want   map[string]float64
	}{{
		name:   "up",
		du:     func(context.Context) ([]*client.UsageInfo, error) { return records, nil },
		wantUp: 1,
		want: map[string]float64{
			"regular": 1024, "exec.cachemount": 12 << 20, "source.git.checkout": 300, "unknown": 9,
			"source.local": 0, "frontend": 0, "internal": 0,
		},
	}, {
		name:   "up and empty",
		du:     func(context.Context) ([]*client.UsageInfo, error) { return nil, nil },
		wantUp: 1,
		want: map[string]float64{
			"regular": 0, "exec.cachemount": 0, "source.git.checkout": 0,
			"source.local": 0, "frontend": 0, "internal": 0,
		},
	}, {
		name:   "error",
		du:     func(context.Context) ([]*client.UsageInfo, error) { return nil, errors.New("connection refused") },
		wantUp: 0,
		want:   map[string]float64{},
	}, {
		name: "timeout",
		du: func(ctx context.Context) ([]*client.UsageInfo, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("no deadline")
			}
			<-ctx.Done()
			return nil, ctx.Err()
		},
		wantUp: 0,
		want:   map[string]float64{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reg := newMetrics(t, WithDiskUsage(tt.du), WithDiskUsageTimeout(20*time.Millisecond))
			up, usage := readBuildkitd(t, reg)
			if up != tt.wantUp {
				t.Errorf("buildkitd_up = %v, want %v", up, tt.wantUp)
			}
			if len(usage) != len(tt.want) {
				t.Errorf("disk usage = %v, want %v", usage, tt.want)
			}
			for k, v := range tt.want {
				if usage[k] != v {
					t.Errorf("disk_usage_bytes{type=%q} = %v, want %v", k, usage[k], v)
				}
			}
		})
	}
}

// TestBuildkitdRecovers checks that each scrape asks again: down, then up.
func TestBuildkitdRecovers(t *testing.T) {
	var fail = true
	du := func(context.Context) ([]*client.UsageInfo, error) {
		if fail {
			return nil, errors.New("down")
		}
		return []*client.UsageInfo{{Size: 1, RecordType: client.UsageRecordTypeInternal}}, nil
	}
	_, reg := newMetrics(t, WithDiskUsage(du))
	if up, _ := readBuildkitd(t, reg); up != 0 {
		t.Fatalf("up = %v while down", up)
	}
	fail = false
	if up, usage := readBuildkitd(t, reg); up != 1 || usage["internal"] != 1 {
		t.Fatalf("up = %v, usage %v after it came back", up, usage)
	}
}

func TestNoBuildkitdMetricsWithoutDiskUsage(t *testing.T) {
	_, reg := newMetrics(t)
	if up, usage := readBuildkitd(t, reg); up != -1 || len(usage) != 0 {
		t.Fatalf("up = %v, usage %v without WithDiskUsage", up, usage)
	}
}

// One answer serves the scrapes of a sampling interval; after it, a scrape
// asks again. A failure is not kept.
func TestBuildkitdSampledOnInterval(t *testing.T) {
	var calls int
	size := int64(1)
	du := func(context.Context) ([]*client.UsageInfo, error) {
		calls++
		return []*client.UsageInfo{{Size: size, RecordType: client.UsageRecordTypeInternal}}, nil
	}
	c := newBuildkitdCollector(du, time.Second, time.Minute)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if r, err := c.sample(); err != nil || r[0].Size != 1 {
			t.Fatalf("sample %d: %v %v", i, r, err)
		}
		now = now.Add(20 * time.Second)
	}
	if calls != 1 {
		t.Errorf("%d calls within the interval, want 1", calls)
	}
	size = 2
	now = now.Add(time.Minute)
	if r, _ := c.sample(); r[0].Size != 2 || calls != 2 {
		t.Errorf("after the interval: size %d, %d calls; want a new answer", r[0].Size, calls)
	}
	fail := errors.New("down")
	c.diskUsage = func(context.Context) ([]*client.UsageInfo, error) { calls++; return nil, fail }
	now = now.Add(time.Minute)
	if _, err := c.sample(); err != fail {
		t.Errorf("a failed call: %v", err)
	}
	c.diskUsage = du
	if r, err := c.sample(); err != nil || calls != 4 || r[0].Size != 2 {
		t.Errorf("after a failure the next scrape asks again: %v %v, %d calls", r, err, calls)
	}
}
