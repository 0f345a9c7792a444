package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestPhasesOf(t *testing.T) {
	const full = `{"buildId":"b","seq":"1","time":"2026-01-01T00:00:00Z","state":{"state":"BUILD_STATE_RESOLVING"}}
{"buildId":"b","seq":"2","time":"2026-01-01T00:00:00.010Z","state":{"state":"BUILD_STATE_QUEUED"}}
{"buildId":"b","seq":"3","time":"2026-01-01T00:00:00.020Z","state":{"state":"BUILD_STATE_QUEUED","message":"moved up the queue (position 0)"}}
{"buildId":"b","seq":"3","time":"2026-01-01T00:00:00.030Z","state":{"state":"BUILD_STATE_BUILDING"}}
{"buildId":"b","seq":"4","time":"2026-01-01T00:00:00.100Z","vertex":{"name":"git x@1","started":"2026-01-01T00:00:00.040Z","completed":"2026-01-01T00:00:00.090Z"}}
{"buildId":"b","seq":"5","time":"2026-01-01T00:00:01Z","vertex":{"name":"go build .","started":"2026-01-01T00:00:00.200Z"}}
{"buildId":"b","seq":"6","time":"2026-01-01T00:00:01.500Z","vertex":{"name":"go build .","started":"2026-01-01T00:00:00.200Z","completed":"2026-01-01T00:00:01.400Z"}}
{"buildId":"b","seq":"7","time":"2026-01-01T00:00:01.530Z","state":{"state":"BUILD_STATE_PUSHING"}}
{"buildId":"b","seq":"8","time":"2026-01-01T00:00:01.900Z","state":{"state":"BUILD_STATE_SUCCEEDED"}}
{"buildId":"b","seq":"9","time":"2026-01-01T00:00:02Z","result":{"image":"r/a@sha256:0"}}
`
	tests := []struct {
		name string
		log  string
		want map[string]float64
	}{
		{"every phase", full, map[string]float64{
			"resolving": 0.010, "queued": 0.020, "building": 1.500, "gobuild": 1.200, "pushing": 0.370, "events": 2.0,
		}},
		{"no pushing state, no completed go build", `{"time":"2026-01-01T00:00:00Z","state":{"state":"BUILD_STATE_RESOLVING"}}
{"time":"2026-01-01T00:00:00.5Z","state":{"state":"BUILD_STATE_QUEUED"}}
{"time":"2026-01-01T00:00:01Z","vertex":{"name":"go build .","started":"2026-01-01T00:00:00.600Z"}}
not json: the CLI's text
`, map[string]float64{
			"resolving": 0.5, "queued": 0, "building": 0, "gobuild": 0, "pushing": 0, "events": 1.0,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(p, []byte(tc.log), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := phasesOf(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range phaseNames {
				if math.Abs(got[k]-tc.want[k]) > 1e-9 {
					t.Errorf("%s = %.3f, want %.3f", k, got[k], tc.want[k])
				}
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
