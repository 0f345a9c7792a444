package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// report is what one benchmark run measured.
type report struct {
	buildID  string
	state    buildv1.BuildState
	lastSeq  uint64
	watchers []*watcher
	conns    int
	attach   time.Duration // from the first WatchBuild call to the last
	start    time.Time     // when StartBuild was called
	elapsed  time.Duration // from StartBuild to the last stream's end
	// RSS of the server: before the build, the peak sampled during the
	// run, and VmHWM (the peak since the server started) after it.
	idleRSS, peakRSS, hwm int64
	samples               int
	rssErr                error
	// CPU time the server and this process used during the run.
	serverCPU, clientCPU time.Duration
	// events are what each event was, as the first watcher got them.
	events []eventInfo
}

// run starts (or names) the build, watches it with cfg.watchers streams
// and collects what they got. An error means the benchmark could not run.
func run(ctx context.Context, cfg config) (*report, error) {
	if cfg.watchers < 1 || cfg.conns < 1 {
		return nil, fmt.Errorf("-watchers and -conns must be at least 1")
	}
	if cfg.buildID == "" && (cfg.repo == "" || cfg.commit == "" || cfg.tag == "") {
		return nil, fmt.Errorf("-repo, -commit and -tag are required unless -build-id is given")
	}
	clients := make([]buildv1.BuildClient, cfg.conns)
	for i := range clients {
		cc, err := dial(ctx, cfg.addr)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		clients[i] = buildv1.NewBuildClient(cc)
	}
	rep := &report{conns: cfg.conns}
	var sampler *rssSampler
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampled sync.WaitGroup
	if cfg.serverPID > 0 {
		m, err := readStatus(cfg.serverPID)
		if err != nil {
			return nil, fmt.Errorf("server RSS: %w", err)
		}
		rep.idleRSS = m.RSS
		sampler = &rssSampler{pid: cfg.serverPID}
		sampled.Go(func() { sampler.run(sctx, cfg.every) })
	}

	cpu0, _ := readCPU(cfg.serverPID)
	self0 := selfCPU()
	start := time.Now()
	rep.start = start
	rep.buildID = cfg.buildID
	if rep.buildID == "" {
		resp, err := clients[0].StartBuild(ctx, &buildv1.StartBuildRequest{Request: &buildv1.CreateImageRequest{
			GitRepo: cfg.repo, GitCommit: cfg.commit, ImageTag: cfg.tag, BuildFlags: flagsOf(cfg.buildFlags),
		}})
		if err != nil {
			return nil, fmt.Errorf("start build: %w", err)
		}
		rep.buildID = resp.GetBuildId()
	}

	rep.watchers = make([]*watcher, cfg.watchers)
	var wg sync.WaitGroup
	for i := range rep.watchers {
		w := &watcher{}
		if i == 0 {
			w.events = &rep.events
		}
		rep.watchers[i] = w
		c := clients[i%len(clients)]
		wg.Go(func() { w.watch(ctx, c, rep.buildID) })
	}
	wg.Wait()
	rep.elapsed = time.Since(start)
	rep.clientCPU = selfCPU() - self0
	if cfg.serverPID > 0 {
		if cpu1, err := readCPU(cfg.serverPID); err == nil {
			rep.serverCPU = cpu1 - cpu0
		}
	}
	first, last := rep.watchers[0].opened, rep.watchers[0].opened
	for _, w := range rep.watchers {
		first, last = minTime(first, w.opened), maxTime(last, w.opened)
	}
	rep.attach = last.Sub(first)

	if sampler != nil {
		stopSampling()
		sampled.Wait()
		sampler.sample()
		rep.peakRSS, rep.samples, rep.rssErr = sampler.peak()
		if m, err := readStatus(cfg.serverPID); err == nil {
			rep.hwm = m.HWM
		} else if rep.rssErr == nil {
			rep.rssErr = err
		}
	}

	info, err := clients[0].GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: rep.buildID})
	if err != nil {
		return nil, fmt.Errorf("get build %s: %w", rep.buildID, err)
	}
	rep.state, rep.lastSeq = info.GetState(), info.GetLastSeq()
	for _, w := range rep.watchers {
		w.check.finish(rep.lastSeq)
	}
	return rep, nil
}

// dial opens one connection (its own ClientConn, so its own TCP
// connection) and waits until it is ready, so that the handshake is not
// part of what is measured.
func dial(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cc.Connect()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			return nil, fmt.Errorf("connect to %s: %w (state %s)", addr, ctx.Err(), s)
		}
	}
	return cc, nil
}

// ok reports whether every watcher got every event exactly once, in order,
// and its stream ended cleanly.
func (r *report) ok() bool {
	for _, w := range r.watchers {
		if w.err != nil || !w.check.ok() {
			return false
		}
	}
	return true
}

// print writes the report, the goals and whether they were met.
func (r *report) print(out io.Writer, cfg config) {
	var live, replay []time.Duration
	var total, bad, failed, minEv, maxEv, withLive int
	var firstProblem string
	minEv = -1
	for _, w := range r.watchers {
		live = append(live, w.live...)
		replay = append(replay, w.replay...)
		total += w.check.received
		if minEv < 0 || w.check.received < minEv {
			minEv = w.check.received
		}
		maxEv = max(maxEv, w.check.received)
		if len(w.live) > 0 {
			withLive++
		}
		switch {
		case w.err != nil:
			failed++
			if firstProblem == "" {
				firstProblem = "stream error: " + w.err.Error()
			}
		case !w.check.ok():
			bad++
			if firstProblem == "" {
				firstProblem = w.check.first
			}
		}
	}
	ls, rs := summarize(live), summarize(replay)
	fmt.Fprintf(out, "Fan-out: %d watchers of build %s over %d connections (%s)\n", len(r.watchers), r.buildID, r.conns, r.state)
	fmt.Fprintf(out, "  events in the build's log      %d (last seq)\n", r.lastSeq)
	fmt.Fprintf(out, "  events per watcher             %s\n", spread(minEv, maxEv))
	fmt.Fprintf(out, "  events delivered               %d in %s (%.0f/s)\n", total, r.elapsed.Round(time.Millisecond), float64(total)/r.elapsed.Seconds())
	fmt.Fprintf(out, "  watchers attached within       %s (%d of them saw live events)\n", r.attach.Round(time.Millisecond), withLive)
	fmt.Fprintf(out, "  delivery latency, live events  %s\n", ls)
	fmt.Fprintf(out, "  catch-up (events recorded before a watcher attached, sent from the log)  %s\n", rs)
	if cfg.serverPID > 0 {
		if r.rssErr != nil {
			fmt.Fprintf(out, "  server RSS                     error: %v\n", r.rssErr)
		}
		fmt.Fprintf(out, "  server RSS                     idle %s, peak %s (%d samples every %s), VmHWM %s\n",
			mib(r.idleRSS), mib(r.peakRSS), r.samples, cfg.every, mib(r.hwm))
	}
	fmt.Fprintf(out, "  CPU used during the run         server %s, watchers (this process) %s\n",
		r.serverCPU.Round(10*time.Millisecond), r.clientCPU.Round(10*time.Millisecond))
	fmt.Fprintf(out, "  slowest events (worst latency over the watchers; burst: events recorded in the 100 ms before it):\n")
	for _, s := range slowest(r.watchers, r.events, 5) {
		fmt.Fprintf(out, "    seq %-5d at +%5.1fs  %-7s %6d bytes  burst %4d  p50 %s  max %s\n",
			s.seq, s.at.Sub(r.start).Seconds(), s.kind, s.size, s.burst, ms(s.p50), ms(s.max))
	}
	fmt.Fprintf(out, "  errors                         %d stream errors, %d watchers with missed/duplicate events\n", failed, bad)
	if firstProblem != "" {
		fmt.Fprintf(out, "  first problem                  %s\n", firstProblem)
	}
	fmt.Fprintf(out, "Goals:\n")
	if ls.N == 0 {
		fmt.Fprintf(out, "  p99 delivery latency < %s    not measured (no live events: the build ended before the watchers attached)\n", cfg.goalP99)
	} else {
		fmt.Fprintf(out, "  p99 delivery latency < %s    %s  %s\n", cfg.goalP99, ms(ls.P99), met(ls.P99 < cfg.goalP99))
	}
	if cfg.serverPID > 0 {
		peak := max(r.peakRSS, r.hwm)
		fmt.Fprintf(out, "  server peak RSS < %s       %s  %s\n", mib(cfg.goalRSS), mib(peak), met(peak < cfg.goalRSS))
	}
	fmt.Fprintf(out, "  every watcher got every event once, in order: %s\n", met(r.ok()))
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func spread(lo, hi int) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d to %d (NOT the same)", lo, hi)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// slowEvent is one event's latency over the watchers.
type slowEvent struct {
	eventInfo
	burst    int
	p50, max time.Duration
}

// slowest returns the n events with the largest latency over the
// watchers whose check passed, worst first.
func slowest(ws []*watcher, events []eventInfo, n int) []slowEvent {
	var out []slowEvent
	for i, ev := range events {
		var ds []time.Duration
		for _, w := range ws {
			if w.check.ok() && i < len(w.bySeq) {
				ds = append(ds, w.bySeq[i])
			}
		}
		if len(ds) == 0 {
			continue
		}
		s := summarize(ds)
		burst := 0
		for j := i; j >= 0 && ev.at.Sub(events[j].at) <= 100*time.Millisecond; j-- {
			burst++
		}
		out = append(out, slowEvent{eventInfo: ev, burst: burst, p50: s.P50, max: s.Max})
	}
	slices.SortFunc(out, func(a, b slowEvent) int { return cmp.Compare(b.max, a.max) })
	return out[:min(n, len(out))]
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
