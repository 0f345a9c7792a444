package main

import "fmt"

// seqCheck checks that one stream's events arrive exactly once and in
// order: seq 1, 2, 3, ... with no gap, and, at the end, up to the build's
// last seq.
type seqCheck struct {
	last       uint64 // the highest seq seen
	received   int    // events received
	missing    uint64 // seqs never received
	duplicates int    // events with a seq at or below one already seen
	first      string // the first problem, for the report
}

// observe records an event's seq.
func (c *seqCheck) observe(seq uint64) {
	c.received++
	switch {
	case seq == c.last+1:
		c.last = seq
	case seq <= c.last:
		c.duplicates++
		c.problem("seq %d after %d (duplicate or out of order)", seq, c.last)
	default:
		c.missing += seq - c.last - 1
		c.problem("seq %d after %d (%d missed)", seq, c.last, seq-c.last-1)
		c.last = seq
	}
}

// finish records the end of the stream of a build whose last event is
// lastSeq: events after the last one seen are missing.
func (c *seqCheck) finish(lastSeq uint64) {
	if lastSeq > c.last {
		c.missing += lastSeq - c.last
		c.problem("stream ended at seq %d; the build's last is %d", c.last, lastSeq)
	}
}

// ok reports whether every event arrived exactly once, in order.
func (c *seqCheck) ok() bool { return c.missing == 0 && c.duplicates == 0 }

func (c *seqCheck) problem(format string, args ...any) {
	if c.first == "" {
		c.first = fmt.Sprintf(format, args...)
	}
}
