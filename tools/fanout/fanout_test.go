package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one value", []time.Duration{7}, 0.5, 7},
		{"p50 of 1..100 ms", hundred, 0.50, 50 * time.Millisecond},
		{"p99 of 1..100 ms", hundred, 0.99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 1, 100 * time.Millisecond},
		{"tiny q is the min", hundred, 0.0001, time.Millisecond},
		{"p50 of two is the lower", []time.Duration{1, 2}, 0.5, 1},
		{"p99 of ten is the max", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	// Unsorted on purpose: summarize sorts.
	ds := []time.Duration{30, 10, 50, 20, 40}
	got := summarize(ds)
	want := summary{N: 5, Min: 10, P50: 30, P99: 50, Max: 50, Mean: 30}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if (summarize(nil) != summary{}) {
		t.Errorf("summarize(nil) is not the zero summary")
	}
}

func TestSeqCheck(t *testing.T) {
	tests := []struct {
		name      string
		seqs      []uint64
		lastSeq   uint64
		ok        bool
		missing   uint64
		dups      int
		received  int
		wantFirst bool
	}{
		{"every event once in order", []uint64{1, 2, 3, 4}, 4, true, 0, 0, 4, false},
		{"nothing, empty build", nil, 0, true, 0, 0, 0, false},
		{"gap in the middle", []uint64{1, 2, 5, 6}, 6, false, 2, 0, 4, true},
		{"first event missing", []uint64{2, 3}, 3, false, 1, 0, 2, true},
		{"tail missing", []uint64{1, 2}, 5, false, 3, 0, 2, true},
		{"nothing of a build with events", nil, 3, false, 3, 0, 0, true},
		{"duplicate", []uint64{1, 2, 2, 3}, 3, false, 0, 1, 4, true},
		{"out of order", []uint64{1, 3, 2}, 3, false, 1, 1, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c seqCheck
			for _, s := range tt.seqs {
				c.observe(s)
			}
			c.finish(tt.lastSeq)
			if c.ok() != tt.ok || c.missing != tt.missing || c.duplicates != tt.dups || c.received != tt.received {
				t.Errorf("ok=%v missing=%d duplicates=%d received=%d, want ok=%v missing=%d duplicates=%d received=%d",
					c.ok(), c.missing, c.duplicates, c.received, tt.ok, tt.missing, tt.dups, tt.received)
			}
			if (c.first != "") != tt.wantFirst {
				t.Errorf("first problem %q, want one: %v", c.first, tt.wantFirst)
			}
		})
	}
}

func TestWatcherRecord(t *testing.T) {
	opened := time.Date(2025, 1, 1, 0, 0, 10, 0, time.UTC)
	w := &watcher{opened: opened}
	ev := func(seq uint64, at time.Time) *buildv1.BuildEvent {
		return &buildv1.BuildEvent{Seq: seq, Time: timestamppb.New(at)}
	}
	// Recorded 5 s before the watcher attached, received at once: catch-up.
	w.record(ev(1, opened.Add(-5*time.Second)), opened.Add(time.Millisecond))
	// Recorded after it attached: live, 3 ms and 20 ms.
	w.record(ev(2, opened.Add(time.Second)), opened.Add(time.Second+3*time.Millisecond))
	w.record(ev(3, opened.Add(2*time.Second)), opened.Add(2*time.Second+20*time.Millisecond))
	if len(w.replay) != 1 || w.replay[0] != 5*time.Second+time.Millisecond {
		t.Errorf("replay = %v, want [5.001s]", w.replay)
	}
	want := []time.Duration{3 * time.Millisecond, 20 * time.Millisecond}
	if len(w.live) != 2 || w.live[0] != want[0] || w.live[1] != want[1] {
		t.Errorf("live = %v, want %v", w.live, want)
	}
	if w.check.last != 3 || !w.check.ok() {
		t.Errorf("seq check: last %d ok %v, want 3 true", w.check.last, w.check.ok())
	}
}

func TestParseStatus(t *testing.T) {
	const status = "Name:\tbuildsvc-server\nVmPeak:\t 1000 kB\nVmHWM:\t   90112 kB\nVmRSS:\t   65536 kB\nThreads:\t12\n"
	tests := []struct {
		name    string
		in      string
		want    memStatus
		wantErr bool
	}{
		{"both", status, memStatus{RSS: 64 << 20, HWM: 88 << 20}, false},
		{"no VmHWM", "VmRSS:\t 4 kB\n", memStatus{}, true},
		{"not kB", "VmRSS:\t 4 MB\nVmHWM:\t 4 kB\n", memStatus{}, true},
		{"not a number", "VmRSS:\t x kB\nVmHWM:\t 4 kB\n", memStatus{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatus = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFlagsOf(t *testing.T) {
	got := flagsOf(" -x, ,-a,")
	if len(got) != 2 || got[0] != "-x" || got[1] != "-a" {
		t.Errorf("flagsOf = %q, want [-x -a]", got)
	}
}
