//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/pgschema/pgtest"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
	"github.com/buildsvc/buildsvc/sharedqueue"
)

// startReplica is an in-process server sharing the history and the queue
// of the database at dsn, as replica name, running at most maxConcurrent
// builds across the replicas.
func startReplica(t *testing.T, dsn, name string, maxConcurrent int) *testServer {
	t.Helper()
	return startReplicaWith(t, dsn, name, maxConcurrent, nil)
}

// Two replicas on one PostgreSQL: 40 builds submitted alternately to both,
// with 2 running at most across them, all succeed, each run once (one
// claim, one BUILDING), never more than 2 at a time; both replicas ran
// some; a watcher on one replica follows a build the other runs, every
// event in order, once; any replica lists and gets any build.
func TestReplicasShareTheQueue(t *testing.T) {
	t.Parallel()
	dsn := pgtest.FreshSchema(t, "replicas_test")
	replicas := []*testServer{startReplica(t, dsn, "replica-a", 2), startReplica(t, dsn, "replica-b", 2)}
	repo := newRepo(t, sampleFiles(t))
	// The first build fills BuildKit's cache; the 40 then mostly export.
	requireSuccess(t, build(t, replicas[0].Client, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "warm")}))

	const n = 40
	ids := make([]string, n)
	for i := range n {
		resp, err := replicas[i%2].Client.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{
			GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, fmt.Sprint("b", i))}))
		if err != nil {
			t.Fatalf("StartBuild %d on replica %d: %v", i, i%2, err)
		}
		ids[i] = resp.GetBuildId()
	}

	// A watcher on the replica that does not run build 0 follows it live.
	var watched []*buildv1.BuildEvent
	var watchErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runner := waitClaimed(t, replicas, ids[0])
		watched, watchErr = watchToEnd(t, replicas[1-runner].Client, ids[0])
	}()

	infos := make([]*buildv1.BuildInfo, n)
	for i, id := range ids {
		infos[i] = waitEnded(t, replicas[(i+1)%2].Client, id, 10*time.Minute)
		if infos[i].GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
			t.Errorf("build %d (%s) ended %v: %v", i, id, infos[i].GetState(), infos[i].GetError())
		}
	}
	wg.Wait()

	claims := map[string]int{}
	byReplica := map[int]int{}
	for r, ts := range replicas {
		for _, rec := range logRecords(ts.Log.String(), "claimed a queued build") {
			id, _ := rec["build"].(string)
			claims[id]++
			byReplica[r]++
		}
	}
	for i, id := range ids {
		if claims[id] != 1 {
			t.Errorf("build %d (%s) was claimed %d times", i, id, claims[id])
		}
		evs, err := watchToEnd(t, replicas[i%2].Client, id)
		if err != nil {
			t.Fatal(err)
		}
		building := 0
		for _, e := range evs {
			if e.GetState().GetState() == buildv1.BuildState_BUILD_STATE_BUILDING {
				building++
			}
		}
		if building != 1 {
			t.Errorf("build %d ran %d times (BUILDING states)", i, building)
		}
		if i == 0 {
			if watchErr != nil {
				t.Fatalf("the watcher on the other replica: %v", watchErr)
			}
			if len(watched) != len(evs) {
				t.Fatalf("the watcher on the other replica saw %d events, the build has %d", len(watched), len(evs))
			}
			for j := range evs {
				if !proto.Equal(watched[j], evs[j]) {
					t.Fatalf("event %d seen by the watcher differs: %v, stored %v", j, watched[j], evs[j])
				}
			}
		}
	}
	if byReplica[0] == 0 || byReplica[1] == 0 {
		t.Errorf("one replica ran every build: %v", byReplica)
	}
	if peak := peakRunning(infos); peak > 2 {
		t.Errorf("%d builds ran at once across the replicas, the limit is 2", peak)
	}
	t.Logf("claims by replica %v, peak running %d", byReplica, peakRunning(infos))

	// Either replica lists them all.
	for r, ts := range replicas {
		resp, err := ts.Client.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(resp.GetBuilds()); got != n+1 {
			t.Errorf("replica %d lists %d builds, want %d", r, got, n+1)
		}
	}
}

// A replica killed mid-build: the other marks its running build
// INTERRUPTED once its lease runs out, and runs the builds it had queued;
// a cancel on one replica of a build queued through the other ends it.
func TestReplicaKilled(t *testing.T) {
	t.Parallel()
	st := loadStack(t)
	dsn := pgtest.FreshSchema(t, "replicas_test")
	goproxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	dir := t.TempDir()
	victim := startServerProcess(t,
		"--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--data-dir", filepath.Join(dir, "victim"),
		"--buildkit-addr", st.BuildKitAddr,
		"--database-url", dsn, "--replica-name", "victim", "--replica-lease", "3s",
		"--max-concurrent-builds", "1",
		"--docker-config", st.DockerConfig, "--builder-image", st.BuilderImage, "--base-image", st.BaseImage,
		"--allow-loopback-hosts", "--allowed-ports", st.gitPort(t),
		"--goproxy", strings.TrimSpace(string(goproxy)),
	)
	rec := victim.logged(t, "serving", 2*time.Minute)
	addr, _ := rec["addr"].(string)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	vc := buildv1.NewBuildClient(conn)

	// The slow build runs on the victim, the only replica yet; two more
	// wait (one slot in all).
	repo := newRepo(t, slowFiles("killed replica"))
	slow, err := vc.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "slow")}))
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, vc, slow.GetBuildId(), func(e *buildv1.BuildEvent) bool {
		v := e.GetVertex()
		return v != nil && v.GetStarted() != nil && v.GetCompleted() == nil && strings.Contains(v.GetName(), "go build")
	})
	quick := newRepo(t, sampleFiles(t))
	var queued []string
	for i := range 2 {
		resp, err := vc.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: quick.URL, GitCommit: "main", ImageTag: tagFor(t, fmt.Sprint("queued", i))}))
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, resp.GetBuildId())
	}

	// The survivor, with its one slot taken by the victim's build, cancels
	// one of them, then the victim dies.
	survivor := startReplica(t, dsn, "survivor", 1)
	sc := survivor.Client
	cancelled, err := sc.CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: queued[1]})
	if err != nil {
		t.Fatal(err)
	}
	if cancelled.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("a build queued through the victim, cancelled on the survivor: %v", cancelled.GetBuild().GetState())
	}
	killed := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.done

	info := waitEnded(t, sc, slow.GetBuildId(), time.Minute)
	took := time.Since(killed)
	if info.GetState() != buildv1.BuildState_BUILD_STATE_INTERRUPTED || !strings.Contains(info.GetError().GetMessage(), "replica that ran or held the build stopped answering") {
		t.Fatalf("the victim's running build: %v %v", info.GetState(), info.GetError())
	}
	t.Logf("the killed replica's build was INTERRUPTED %v after the kill (lease 3s)", took.Round(100*time.Millisecond))
	if got := waitEnded(t, sc, queued[0], 5*time.Minute); got.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("the victim's queued build ended %v: %v", got.GetState(), got.GetError())
	}
	if n := len(logRecords(survivor.Log.String(), "claimed a queued build")); n != 1 {
		t.Errorf("the survivor claimed %d builds, want the one left queued", n)
	}
}

// waitClaimed waits until one of the replicas claims build id, and says
// which.
func waitClaimed(t *testing.T, replicas []*testServer, id string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		for r, ts := range replicas {
			for _, rec := range logRecords(ts.Log.String(), "claimed a queued build") {
				if rec["build"] == id {
					return r
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("no replica claimed %s", id)
	return 0
}

// watchToEnd is every event WatchBuild sends of build id, to its end.
func watchToEnd(t *testing.T, c buildv1.BuildClient, id string) ([]*buildv1.BuildEvent, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	s, err := c.WatchBuild(ctx, &buildv1.WatchBuildRequest{BuildId: id})
	if err != nil {
		return nil, err
	}
	var out []*buildv1.BuildEvent
	for {
		e, err := s.Recv()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			return out, err
		}
		if want := uint64(len(out) + 1); e.GetSeq() != want {
			return out, fmt.Errorf("event seq %d, want %d", e.GetSeq(), want)
		}
		out = append(out, e)
	}
	if len(out) == 0 || (out[len(out)-1].GetResult() == nil && out[len(out)-1].GetError() == nil) {
		return out, fmt.Errorf("the watch ended after %d events without the build's end", len(out))
	}
	return out, nil
}

// logRecords are the JSON log records of log with message msg.
func logRecords(log, msg string) []map[string]any {
	var out []map[string]any
	for l := range strings.SplitSeq(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// peakRunning is the most builds whose runs (start to end) overlap.
func peakRunning(infos []*buildv1.BuildInfo) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, i := range infos {
		if i.GetStartTime() == nil || i.GetEndTime() == nil {
			continue
		}
		edges = append(edges, edge{i.GetStartTime().AsTime(), 1}, edge{i.GetEndTime().AsTime(), -1})
	}
	// Ends before starts at the same instant.
	for a := 1; a < len(edges); a++ {
		for b := a; b > 0 && (edges[b].at.Before(edges[b-1].at) || edges[b].at.Equal(edges[b-1].at) && edges[b].delta < edges[b-1].delta); b-- {
			edges[b], edges[b-1] = edges[b-1], edges[b]
		}
	}
	peak, cur := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	return peak
}

// A build given the request's own git token, accepted by one replica,
// runs on that replica (the only one holding the token); the token is in
// none of the shared database's rows.
func TestReplicaRequestCredentials(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	dsn := pgtest.FreshSchema(t, "replicas_test")
	withCA := func(c *server.Config) { c.Credentials = &credentials.Config{CABundle: p.CA} }
	a := startReplicaWith(t, dsn, "replica-a", 2, withCA)
	b := startReplicaWith(t, dsn, "replica-b", 2, withCA)
	app := readDir(t, "../testdata/privateapp")
	app["main.go"] += fmt.Sprintf("\n// %s %d\n", t.Name(), time.Now().UnixNano())
	repo, _ := p.newPrivateRepo(t, app)
	o := build(t, b.Client, &buildv1.CreateImageRequest{
		GitRepo: repo, ImageTag: tagFor(t, "request-token"),
		GitCredentials: &buildv1.GitCredentials{Password: p.Token},
		Goprivate:      "127.0.0.1",
	})
	requireSuccess(t, o)
	id := o.events[0].GetBuildId()
	if n := len(logRecords(a.Log.String(), "claimed a queued build")); n != 0 {
		t.Errorf("the replica without the request's token claimed %d builds", n)
	}
	if n := len(logRecords(b.Log.String(), "claimed a queued build")); n != 1 {
		t.Errorf("the replica holding the token claimed %d builds, want 1", n)
	}
	// Watched through the other replica too.
	if _, err := watchToEnd(t, a.Client, id); err != nil {
		t.Fatal(err)
	}
	dump := dumpSchema(t, dsn)
	if len(dump) == 0 || !strings.Contains(dump, id) {
		t.Fatalf("the dump of the shared database does not have the build (%d bytes)", len(dump))
	}
	for _, s := range []string{p.Token, fmt.Sprintf("%x", p.Token)} {
		if strings.Contains(dump, s) {
			t.Fatalf("the shared database holds the request's token")
		}
	}
}

// startReplicaWith is startReplica with more of the server's config.
func startReplicaWith(t *testing.T, dsn, name string, maxConcurrent int, mutate func(*server.Config)) *testServer {
	t.Helper()
	ctx := context.Background()
	store, err := history.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	q, err := sharedqueue.Open(ctx, dsn, sharedqueue.Options{Replica: name, Lease: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, func(c *server.Config) {
		c.Store, c.Shared = store, q
		c.MaxConcurrent, c.QueueSize = maxConcurrent, 100
		if mutate != nil {
			mutate(c)
		}
	})
	t.Cleanup(func() {
		ts.Stop()
		q.Close(context.Background())
		store.Close()
	})
	return ts
}

// dumpSchema is every row of every table of the DSN's schema, as text
// (bytea as its raw bytes, not only hex).
func dumpSchema(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT * FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if raw, ok := v.([]byte); ok {
					b.Write(raw)
				} else {
					fmt.Fprint(&b, v)
				}
				b.WriteByte('\t')
			}
			b.WriteByte('\n')
		}
		rows.Close()
	}
	return b.String()
}
