package buildkitd

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type report struct {
	up  bool
	err error
}

func startMonitor(t *testing.T, cfg MonitorConfig) (*Monitor, chan report) {
	t.Helper()
	reports := make(chan report, 100)
	cfg.OnChange = func(up bool, err error) { reports <- report{up, err} }
	m, err := NewMonitor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m, reports
}

func expect(t *testing.T, reports chan report, up bool, within time.Duration) report {
	t.Helper()
	select {
	case r := <-reports:
		if r.up != up {
			t.Fatalf("reported up=%v (%v), want up=%v", r.up, r.err, up)
		}
		if (r.err == nil) != up {
			t.Errorf("reported up=%v with err %v", r.up, r.err)
		}
		return r
	case <-time.After(within):
		t.Fatalf("no report of up=%v within %v", up, within)
	}
	return report{}
}

func noReport(t *testing.T, reports chan report, during time.Duration) {
	t.Helper()
	select {
	case r := <-reports:
		t.Fatalf("unexpected report up=%v (%v)", r.up, r.err)
	case <-time.After(during):
	}
}

// The monitor reports the first result, then only changes.
func TestMonitorReportsChanges(t *testing.T) {
	var down atomic.Bool
	_, reports := startMonitor(t, MonitorConfig{
		Interval: 20 * time.Millisecond,
		Probe: func(context.Context) error {
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		},
	})
	expect(t, reports, true, time.Second)
	noReport(t, reports, 100*time.Millisecond) // still up: nothing to say
	down.Store(true)
	if r := expect(t, reports, false, time.Second); r.err.Error() != "connection refused" {
		t.Errorf("err = %v", r.err)
	}
	noReport(t, reports, 100*time.Millisecond)
	down.Store(false)
	expect(t, reports, true, time.Second)
}

// Check probes at once, whatever the interval.
func TestMonitorCheck(t *testing.T) {
	var down atomic.Bool
	var probes atomic.Int64
	m, reports := startMonitor(t, MonitorConfig{
		Interval:     time.Hour,
		DownInterval: time.Hour,
		Probe: func(context.Context) error {
			probes.Add(1)
			if down.Load() {
				return errors.New("gone")
			}
			return nil
		},
	})
	expect(t, reports, true, time.Second)
	down.Store(true)
	m.Check()
	expect(t, reports, false, time.Second)
	down.Store(false)
	m.Check()
	m.Check() // coalesced with the one before, or a probe more: either is fine
	expect(t, reports, true, time.Second)
	if n := probes.Load(); n > 4 {
		t.Errorf("%d probes, want at most 4", n)
	}
}

// A daemon that is down is probed at DownInterval, so its return is seen
// before the next Interval.
func TestMonitorProbesOftenWhileDown(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	_, reports := startMonitor(t, MonitorConfig{
		Interval:     time.Hour,
		DownInterval: 20 * time.Millisecond,
		Probe: func(context.Context) error {
			if down.Load() {
				return errors.New("gone")
			}
			return nil
		},
	})
	expect(t, reports, false, time.Second)
	down.Store(false)
	expect(t, reports, true, time.Second)
}

// A probe that hangs counts as down once its timeout passes.
func TestMonitorProbeTimeout(t *testing.T) {
	_, reports := startMonitor(t, MonitorConfig{
		Timeout: 30 * time.Millisecond,
		Probe: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		},
	})
	if r := expect(t, reports, false, time.Second); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", r.err)
	}
}

func TestNewMonitorRefuses(t *testing.T) {
	probe := func(context.Context) error { return nil }
	onChange := func(bool, error) {}
	for name, cfg := range map[string]MonitorConfig{
		"no probe":          {OnChange: onChange},
		"no OnChange":       {Probe: probe},
		"negative interval": {Probe: probe, OnChange: onChange, Interval: -time.Second},
	} {
		if _, err := NewMonitor(cfg); err == nil {
			t.Errorf("%s: NewMonitor succeeded", name)
		}
	}
}
