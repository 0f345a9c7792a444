//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
	"github.com/buildsvc/buildsvc/workers"
)

// poolDaemon is a buildkitd of the test's own, with a state dir that
// outlives a kill.
type poolDaemon struct {
	dir, config, addr string
	log               *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startPoolDaemon(t *testing.T) *poolDaemon {
	t.Helper()
	dir := tempDirForDaemon(t)
	log, err := os.Create(filepath.Join(dir, "buildkitd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d := &poolDaemon{dir: dir, config: childConfig(t, dir), addr: "unix://" + filepath.Join(dir, "bk.sock"), log: log}
	d.start(t)
	t.Cleanup(func() {
		d.kill(t)
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s log (last 3000 bytes):\n%s", d.addr, b[max(0, len(b)-3000):])
		}
	})
	return d
}

func (d *poolDaemon) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(stackDir(t), "bin", "buildkitd"), "--config", d.config)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := buildkitd.Dial(ctx, buildkitd.Endpoint{Address: d.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		if err := buildkitd.Probe(ctx, c); err == nil {
			return
		} else if ctx.Err() != nil {
			t.Fatalf("buildkitd at %s did not answer: %v", d.addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill SIGKILLs the daemon (and the build containers of its process
// group), as a host that dies would.
func (d *poolDaemon) kill(t *testing.T) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("buildkitd %s outlived SIGKILL", d.addr)
	}
}

// slowFiles is a main package whose compile takes seconds (thousands of
// functions), so that a test can act while it runs.
func slowFiles(salt string) map[string]string {
	var b strings.Builder
	b.WriteString("package main\n\nimport \"fmt\"\n\n")
	const n = 600
	for i := range n {
		fmt.Fprintf(&b, "func f%d(x int) int {\n\ts := 0\n", i)
		for j := range 8 {
			fmt.Fprintf(&b, "\tfor k := 0; k < x+%d; k++ {\n\t\tif k%%%d == 0 {\n\t\t\ts += k * %d\n\t\t} else {\n\t\t\ts -= %d\n\t\t}\n\t}\n", j, j+2, i+1, j)
		}
		b.WriteString("\treturn s\n}\n\n")
	}
	b.WriteString("func main() {\n\tt := 0\n")
	for i := range n {
		fmt.Fprintf(&b, "\tt += f%d(%d)\n", i, i%7)
	}
	fmt.Fprintf(&b, "\tfmt.Println(%q, t)\n}\n", "slow "+salt)
	return map[string]string{"go.mod": "module example.com/slow\n\ngo 1.22\n", "main.go": b.String()}
}

func (d *poolDaemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// A pool of three buildkitds: builds of one repository stay on one worker
// and many repositories spread over all three; a worker at its limit
// spills to the next; a worker killed mid-build (before the push) has the
// build run again on the next and succeed, is taken out of the pool and
// put back once it is restarted.
func TestWorkerPool(t *testing.T) {
	t.Parallel()
	daemons := []*poolDaemon{startPoolDaemon(t), startPoolDaemon(t), startPoolDaemon(t)}
	byAddr := map[string]*poolDaemon{}
	var es []buildkitd.Endpoint
	for _, d := range daemons {
		byAddr[d.addr] = d
		es = append(es, buildkitd.Endpoint{Address: d.addr})
	}
	pool := runPool(t, es, 1)
	waitPool(t, pool, 3)

	ts := startTestServer(t, func(c *server.Config) { c.Builders = server.WorkerPool(pool) })
	c := ts.Client
	record := func(t *testing.T, o outcome) *buildv1.BuildInfo {
		t.Helper()
		res := requireSuccess(t, o)
		var id string
		for _, e := range o.events {
			id = e.GetBuildId()
		}
		info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetBuilder() != res.GetBuilder() {
			t.Errorf("record names builder %q, result %q", info.GetBuilder(), res.GetBuilder())
		}
		return info
	}

	// One repository first in order for each worker: all three get
	// builds.
	first := map[string]*gitRepo{}
	for i := 0; len(first) < len(daemons) && i < 60; i++ {
		r := newRepo(t, sampleFiles(t))
		if w := pool.Order(r.URL)[0]; first[w] == nil {
			first[w] = r
		}
	}
	if len(first) != len(daemons) {
		t.Fatalf("60 repositories ranked first only %d workers", len(first))
	}
	t.Run("spread and affinity", func(t *testing.T) {
		var wg sync.WaitGroup
		got := map[string]string{}
		var mu sync.Mutex
		for w, r := range first {
			wg.Add(1)
			go func() {
				defer wg.Done()
				info := record(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: r.URL, GitCommit: "main", ImageTag: tagFor(t, "spread")}))
				mu.Lock()
				got[w] = info.GetBuilder()
				mu.Unlock()
			}()
		}
		wg.Wait()
		for w, on := range got {
			if on != w {
				t.Errorf("the repository ranked first on %s was built on %s", w, on)
			}
		}
		// Again, one at a time, new commits: each stays on its worker.
		for w, r := range first {
			files := sampleFiles(t)
			files["main.go"] += "\nvar _ = \"again\"\n"
			sha := r.commit("main", "again", files)
			if on := record(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: r.URL, GitCommit: sha, ImageTag: tagFor(t, "again")})).GetBuilder(); on != w {
				t.Errorf("the second build of a repository built on %s went to %s", w, on)
			}
		}
	})

	t.Run("spill", func(t *testing.T) {
		var r *gitRepo
		for _, r = range first {
			break
		}
		order := pool.Order(r.URL)
		var wg sync.WaitGroup
		var mu sync.Mutex
		on := map[string]int{}
		for i := range 2 {
			files := sampleFiles(t)
			files[fmt.Sprintf("spill%d.go", i)] = fmt.Sprintf("package main\n\nvar spill%d = %d\n", i, i)
			sha := r.commit(fmt.Sprintf("spill%d", i), "spill", files)
			wg.Add(1)
			go func() {
				defer wg.Done()
				info := record(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: r.URL, GitCommit: sha, ImageTag: tagFor(t, fmt.Sprint("spill", i))}))
				mu.Lock()
				on[info.GetBuilder()]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if on[order[0]] != 1 || on[order[1]] != 1 {
			t.Fatalf("two concurrent builds of one repository with a limit of 1 per worker ran on %v, want one each on %s and %s", on, order[0], order[1])
		}
	})

	t.Run("a worker killed mid-build", func(t *testing.T) {
		repo := newRepo(t, slowFiles("a"))
		order := pool.Order(repo.URL)
		victim := byAddr[order[0]]
		start, err := c.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "killed")}))
		if err != nil {
			t.Fatal(err)
		}
		id := start.GetBuildId()
		// Kill the worker once go build runs on it.
		waitEvent(t, c, id, func(e *buildv1.BuildEvent) bool {
			v := e.GetVertex()
			return v != nil && v.GetStarted() != nil && v.GetCompleted() == nil && strings.Contains(v.GetName(), "go build")
		})
		victim.kill(t)
		t.Logf("killed buildkitd %s (pid %d) while go build ran", victim.addr, victim.pid())
		info := waitEnded(t, c, id, 10*time.Minute)
		if info.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
			t.Fatalf("the build ended %v: %v", info.GetState(), info.GetError())
		}
		if info.GetBuilder() == victim.addr || info.GetBuilder() != order[1] {
			t.Fatalf("the build ran again on %q, want the next worker %s", info.GetBuilder(), order[1])
		}
		evs := allEvents(t, c, id)
		retried, building := false, 0
		for _, e := range evs {
			if strings.Contains(e.GetWarning().GetShort(), "was lost before the push: running the build again") {
				retried = true
			}
			if e.GetState().GetState() == buildv1.BuildState_BUILD_STATE_BUILDING {
				building++
			}
		}
		if !retried || building != 2 {
			t.Errorf("the log has retry warning %v and %d BUILDING states, want a warning and 2", retried, building)
		}
		waitWorker(t, pool, victim.addr, false)

		// Later builds avoid the dead worker...
		// (Quick builds: the repository is what places them.)
		sha := repo.commit("main", "b", map[string]string{"main.go": "package main\n\nfunc main() { println(\"b\") }\n"})
		if on := record(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: sha, ImageTag: tagFor(t, "avoid")})).GetBuilder(); on == victim.addr {
			t.Errorf("a build went to the killed worker")
		}
		// ...and go back to it once it answers again.
		victim.start(t)
		waitWorker(t, pool, victim.addr, true)
		sha = repo.commit("main", "c", map[string]string{"main.go": "package main\n\nfunc main() { println(\"c\") }\n"})
		if on := record(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: sha, ImageTag: tagFor(t, "back")})).GetBuilder(); on != victim.addr {
			t.Errorf("after its restart the repository's build went to %s, not back to %s", on, victim.addr)
		}
	})
}

// runPool runs a pool of the buildkitds at es, checked every 500 ms, with
// at most maxBuilds builds each (0: no limit), until the test ends.
func runPool(t *testing.T, es []buildkitd.Endpoint, maxBuilds int) *workers.Pool[server.BuildKitClient] {
	t.Helper()
	pool, err := workers.New(workers.Config[server.BuildKitClient]{
		Endpoints: es,
		Dial: func(ctx context.Context, e buildkitd.Endpoint) (server.BuildKitClient, error) {
			return buildkitd.Dial(ctx, e)
		},
		MaxBuilds:     maxBuilds,
		CheckInterval: 500 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var ran sync.WaitGroup
	ran.Add(1)
	go func() { defer ran.Done(); pool.Run(ctx) }()
	t.Cleanup(func() { stop(); ran.Wait() })
	return pool
}

// waitPool waits until n workers are healthy.
func waitPool(t *testing.T, p *workers.Pool[server.BuildKitClient], n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for p.Healthy() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers healthy: %+v", p.Healthy(), n, p.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWorker waits until the pool says worker name is healthy, or not.
func waitWorker(t *testing.T, p *workers.Pool[server.BuildKitClient], name string, healthy bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, s := range p.Status() {
			if s.Name == name && s.Healthy == healthy {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s never became healthy=%v: %+v", name, healthy, p.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEvent follows build id's events until ok says yes.
func waitEvent(t *testing.T, c buildv1.BuildClient, id string, ok func(*buildv1.BuildEvent) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	s, err := c.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := s.Recv()
		if err != nil {
			t.Fatalf("the build's events ended (%v) before the one waited for", err)
		}
		if ok(e) {
			return
		}
	}
}

// allEvents is every event of an ended build.
func allEvents(t *testing.T, c buildv1.BuildClient, id string) []*buildv1.BuildEvent {
	t.Helper()
	s, err := c.WatchBuild(t.Context(), &buildv1.WatchBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []*buildv1.BuildEvent
	for {
		e, err := s.Recv()
		if err != nil {
			return out
		}
		out = append(out, e)
	}
}

// waitEnded waits for build id to end and returns its record.
func waitEnded(t *testing.T, c buildv1.BuildClient, id string, within time.Duration) *buildv1.BuildInfo {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetEndTime() != nil {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %v after %v", id, info.GetState(), within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
