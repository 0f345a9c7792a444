package buildkitd

import (
	"context"
	"errors"
	"fmt"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/moby/buildkit/client"
)

// Defaults of MonitorConfig.
const (
	DefaultProbeInterval = 5 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	// DefaultDownInterval is how often a daemon that is down is probed, so
	// that its return is seen soon.
	DefaultDownInterval = time.Second
)

// Probe reports whether the daemon behind c answers and has a worker to run
// builds on. It fails at once while c has no connection (its reconnection,
// paced by Dial, is at most a second apart), so that a daemon that is gone
// is reported at once; give ctx a short deadline (DefaultProbeTimeout) for
// a daemon that hangs.
func Probe(ctx context.Context, c *client.Client) error {
	resp, err := c.ControlClient().ListWorkers(ctx, &controlapi.ListWorkersRequest{})
	if err != nil {
		return fmt.Errorf("list buildkitd workers: %w", err)
	}
	if len(resp.GetRecord()) == 0 {
		return errors.New("buildkitd has no workers")
	}
	return nil
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Probe checks the daemon once, within its context's deadline, e.g.
	// func(ctx context.Context) error { return Probe(ctx, c) }. Required.
	Probe func(ctx context.Context) error
	// Interval between probes while the daemon is up. Default
	// DefaultProbeInterval.
	Interval time.Duration
	// DownInterval between probes while it is down. Default
	// DefaultDownInterval, or Interval if that is shorter.
	DownInterval time.Duration
	// Timeout of one probe. Default DefaultProbeTimeout.
	Timeout time.Duration
	// OnChange is told the result of the first probe and then every change:
	// up is whether the daemon answers, err why it does not. It is called
	// from Run's goroutine, one call at a time. Required.
	OnChange func(up bool, err error)
}

// A Monitor probes a daemon at an interval and reports when it goes down or
// comes back. Make one with NewMonitor and run it with Run.
type Monitor struct {
	cfg  MonitorConfig
	kick chan struct{}
}

// NewMonitor checks cfg and fills in its defaults.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if cfg.Probe == nil || cfg.OnChange == nil {
		return nil, errors.New("monitor: Probe and OnChange are required")
	}
	if cfg.Interval < 0 || cfg.DownInterval < 0 || cfg.Timeout < 0 {
		return nil, errors.New("monitor: intervals and timeout must not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultProbeInterval
	}
	if cfg.DownInterval == 0 {
		cfg.DownInterval = min(DefaultDownInterval, cfg.Interval)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultProbeTimeout
	}
	return &Monitor{cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Check asks for a probe now, without waiting for it: for when the caller
// knows something changed (a supervised daemon exited or came back). It
// never blocks.
func (m *Monitor) Check() {
	select {
	case m.kick <- struct{}{}:
	default: // a probe is already asked for
	}
}

// Run probes at once, then at the interval (or when Check asks) until ctx
// ends.
func (m *Monitor) Run(ctx context.Context) {
	known, up := false, false
	for {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		err := m.cfg.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if !known || up != (err == nil) {
			known, up = true, err == nil
			m.cfg.OnChange(up, err)
		}
		wait := m.cfg.Interval
		if !up {
			wait = m.cfg.DownInterval
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.kick:
			t.Stop()
		case <-t.C:
		}
	}
}
