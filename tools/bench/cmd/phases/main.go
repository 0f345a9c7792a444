// Command phases reads the event logs of builds (the JSON lines of
// `buildsvc build -o json`, one file per build) and prints, for each phase
// of a build, the median over the files of its seconds, one "NAME SECONDS"
// line per phase:
//
//	resolving  RESOLVING to QUEUED (the git ref resolution)
//	queued     QUEUED to BUILDING
//	building   BUILDING to PUSHING (solving the build graph)
//	gobuild    the "go build ..." step's own started..completed
//	pushing    PUSHING to SUCCEEDED (exporting the image and pushing it)
//	events     the first event to the last
//
// A phase missing from a log (a cached step, a state not sent) counts 0.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// event is the part of a BuildEvent (protojson) the phases need.
type event struct {
	Time  time.Time `json:"time"`
	State *struct {
		State string `json:"state"`
	} `json:"state"`
	Vertex *struct {
		Name      string     `json:"name"`
		Started   *time.Time `json:"started"`
		Completed *time.Time `json:"completed"`
	} `json:"vertex"`
}

// phaseNames are the phases in the order they are printed.
var phaseNames = []string{"resolving", "queued", "building", "gobuild", "pushing", "events"}

// phasesOf computes the seconds of each phase of one build's event log.
func phasesOf(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("phases: %w", err)
	}
	defer f.Close()
	states := map[string]time.Time{}
	var first, last time.Time
	var gobuild time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("phases: %s: %w", path, err)
		}
		if e.Time.IsZero() {
			continue
		}
		if first.IsZero() {
			first = e.Time
		}
		last = e.Time
		if e.State != nil {
			if _, seen := states[e.State.State]; !seen {
				states[e.State.State] = e.Time
			}
		}
		if v := e.Vertex; v != nil && strings.HasPrefix(v.Name, "go build") && v.Started != nil && v.Completed != nil {
			gobuild = v.Completed.Sub(*v.Started)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("phases: %s: %w", path, err)
	}
	between := func(a, b string) float64 {
		ta, oka := states["BUILD_STATE_"+a]
		tb, okb := states["BUILD_STATE_"+b]
		if !oka || !okb {
			return 0
		}
		return tb.Sub(ta).Seconds()
	}
	return map[string]float64{
		"resolving": between("RESOLVING", "QUEUED"),
		"queued":    between("QUEUED", "BUILDING"),
		"building":  between("BUILDING", "PUSHING"),
		"gobuild":   gobuild.Seconds(),
		"pushing":   between("PUSHING", "SUCCEEDED"),
		"events":    last.Sub(first).Seconds(),
	}, nil
}

// median of a non-empty slice.
func median(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: phases EVENTS.jsonl...")
		os.Exit(2)
	}
	all := map[string][]float64{}
	for _, p := range os.Args[1:] {
		ph, err := phasesOf(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for k, v := range ph {
			all[k] = append(all[k], v)
		}
	}
	for _, k := range phaseNames {
		fmt.Printf("%s %.3f\n", k, median(all[k]))
	}
}
