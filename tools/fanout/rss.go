package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memStatus is a process's resident memory, from /proc/PID/status.
type memStatus struct {
	RSS int64 // VmRSS, bytes
	HWM int64 // VmHWM, the peak RSS since the process started, bytes
}

// parseStatus reads VmRSS and VmHWM (in kB) from the text of
// /proc/PID/status.
func parseStatus(b []byte) (memStatus, error) {
	var m memStatus
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return memStatus{}, fmt.Errorf("%s: unexpected value %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.HWM = n << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return memStatus{}, err
	}
	if found != 2 {
		return memStatus{}, fmt.Errorf("VmRSS or VmHWM missing")
	}
	return m, nil
}

// readStatus reads pid's memory status.
func readStatus(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	return parseStatus(b)
}

// rssSampler samples a process's RSS at an interval and keeps the largest.
type rssSampler struct {
	pid int

	mu      sync.Mutex
	maxRSS  int64
	samples int
	err     error
}

// run samples until ctx ends.
func (s *rssSampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *rssSampler) sample() {
	m, err := readStatus(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.samples++
	s.maxRSS = max(s.maxRSS, m.RSS)
}

// peak returns the largest RSS sampled, the number of samples and the
// first error.
func (s *rssSampler) peak() (int64, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS, s.samples, s.err
}

// mib formats bytes as MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// parseCPU returns the user plus system CPU time in the text of
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s).
func parseCPU(b []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// readCPU reads pid's CPU time.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseCPU(b)
}
