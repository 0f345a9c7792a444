package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// summary is the distribution of a set of delivery latencies.
type summary struct {
	N             int
	Min, P50, P99 time.Duration
	Max, Mean     time.Duration
}

// summarize sorts ds in place and returns its distribution; an empty ds
// gives the zero summary.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	slices.Sort(ds)
	var sum float64
	for _, d := range ds {
		sum += float64(d)
	}
	return summary{
		N:    len(ds),
		Min:  ds[0],
		P50:  percentile(ds, 0.50),
		P99:  percentile(ds, 0.99),
		Max:  ds[len(ds)-1],
		Mean: time.Duration(sum / float64(len(ds))),
	}
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method: the smallest value that at least q of the values
// are less than or equal to.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// String prints the summary in milliseconds.
func (s summary) String() string {
	if s.N == 0 {
		return "no events"
	}
	return fmt.Sprintf("p50 %s  p99 %s  max %s  (mean %s, min %s, n=%d)",
		ms(s.P50), ms(s.P99), ms(s.Max), ms(s.Mean), ms(s.Min), s.N)
}

// ms formats d as milliseconds with two decimals.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
