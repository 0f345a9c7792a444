//go:build integration

package sharedqueue_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/pgschema/pgtest"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/sharedqueue"
)

func open(t *testing.T, dsn, replica string, lease time.Duration) *sharedqueue.Queue {
	t.Helper()
	q, err := sharedqueue.Open(context.Background(), dsn, sharedqueue.Options{Replica: replica, Lease: lease,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	return q
}

func enqueue(t *testing.T, q *sharedqueue.Queue, id, tenant, key string, owned bool, lim sharedqueue.AdmitLimits) string {
	t.Helper()
	joined, err := q.Enqueue(context.Background(), sharedqueue.Entry{BuildID: id, Tenant: tenant, DedupKey: key, Owned: owned}, lim)
	if err != nil {
		t.Fatal(err)
	}
	if joined == "" {
		if err := q.Ready(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	return joined
}

var roomy = sharedqueue.AdmitLimits{QueueSize: 1000, MaxConcurrent: 1000}

func TestAdmission(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	a, b := open(t, dsn, "a", 0), open(t, dsn, "b", 0)
	ctx := context.Background()
	if j := enqueue(t, a, "1", "t1", "k1", false, roomy); j != "" {
		t.Fatalf("a new key joined %s", j)
	}
	// The same key on another replica joins the build.
	if j, err := b.Enqueue(ctx, sharedqueue.Entry{BuildID: "2", Tenant: "t1", DedupKey: "k1"}, roomy); err != nil || j != "1" {
		t.Fatalf("same key: joined %q, %v; want 1", j, err)
	}
	// Tenant limit: t1 has 1 queued.
	if _, err := b.Enqueue(ctx, sharedqueue.Entry{BuildID: "3", Tenant: "t1", DedupKey: "k3"}, sharedqueue.AdmitLimits{QueueSize: 10, MaxConcurrent: 10, TenantMaxQueued: 1}); !errors.Is(err, sharedqueue.ErrTenantQueued) {
		t.Fatalf("tenant at its limit: %v", err)
	}
	// Queue limit: 1 queued, 0 running: full only once every slot runs one.
	if _, err := b.Enqueue(ctx, sharedqueue.Entry{BuildID: "4", Tenant: "t2", DedupKey: "k4"}, sharedqueue.AdmitLimits{QueueSize: 1, MaxConcurrent: 1}); err != nil {
		t.Fatalf("a free slot: %v", err)
	}
	_ = b.Ready(ctx, "4")
	ids, err := a.Claim(ctx, 5, sharedqueue.ClaimLimits{MaxConcurrent: 1})
	if err != nil || len(ids) != 1 || ids[0] != "1" {
		t.Fatalf("claim: %v %v; want the oldest, 1", ids, err)
	}
	if _, err := b.Enqueue(ctx, sharedqueue.Entry{BuildID: "5", Tenant: "t2", DedupKey: "k5"}, sharedqueue.AdmitLimits{QueueSize: 1, MaxConcurrent: 1}); !errors.Is(err, sharedqueue.ErrQueueFull) {
		t.Fatalf("full queue: %v", err)
	}
	// Done frees the key and the slot.
	if err := a.Done(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if j := enqueue(t, b, "6", "t1", "k1", false, roomy); j != "" {
		t.Fatalf("after Done the key still joins %s", j)
	}
	if q, r, err := a.Counts(ctx); err != nil || q != 2 || r != 0 {
		t.Fatalf("counts %d queued %d running, %v; want 2, 0", q, r, err)
	}
}

// Two replicas claim 40 builds concurrently with a limit of 3 running:
// each build is claimed once, never more than 3 run, owned builds go only
// to their owner, and a tenant's limit holds across replicas.
func TestClaimsExactlyOnce(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	qs := []*sharedqueue.Queue{open(t, dsn, "a", 0), open(t, dsn, "b", 0)}
	const n = 40
	for i := range n {
		owned := i%10 == 0 // builds 0, 10, 20, 30 are a's own
		enqueue(t, qs[i%2], fmt.Sprint("build-", i), fmt.Sprint("tenant-", i%4), fmt.Sprint("key-", i), owned, roomy)
	}
	lim := sharedqueue.ClaimLimits{MaxConcurrent: 3, TenantMaxRunning: func(tenant string) int {
		if tenant == "tenant-1" {
			return 1
		}
		return 0
	}}
	var mu sync.Mutex
	claimedBy := map[string]string{}
	running := map[string]string{} // id -> tenant
	var peak, tenant1Peak atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for _, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := len(claimedBy) == n
				mu.Unlock()
				if done {
					return
				}
				ids, err := q.Claim(ctx, 2, lim)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, id := range ids {
					if by, ok := claimedBy[id]; ok {
						t.Errorf("%s claimed by %s and %s", id, by, q.Replica())
					}
					claimedBy[id] = q.Replica()
					var i int
					fmt.Sscanf(id, "build-%d", &i)
					running[id] = fmt.Sprint("tenant-", i%4)
				}
				peak.Store(max(peak.Load(), int64(len(running))))
				t1 := 0
				for _, tn := range running {
					if tn == "tenant-1" {
						t1++
					}
				}
				tenant1Peak.Store(max(tenant1Peak.Load(), int64(t1)))
				mu.Unlock()
				// "Run" them a moment, then end them.
				time.Sleep(5 * time.Millisecond)
				for _, id := range ids {
					mu.Lock()
					delete(running, id)
					mu.Unlock()
					if err := q.Done(ctx, id); err != nil {
						t.Error(err)
					}
				}
				if len(ids) == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if len(claimedBy) != n {
		t.Fatalf("%d of %d claimed", len(claimedBy), n)
	}
	for _, i := range []int{0, 10, 20, 30} {
		if by := claimedBy[fmt.Sprint("build-", i)]; by != "a" {
			t.Errorf("build-%d, a's own, was claimed by %s", i, by)
		}
	}
	byReplica := map[string]int{}
	for _, r := range claimedBy {
		byReplica[r]++
	}
	t.Logf("claims by replica %v, peak running %d, tenant-1 peak %d", byReplica, peak.Load(), tenant1Peak.Load())
	if peak.Load() > 3 || tenant1Peak.Load() > 1 {
		t.Errorf("peak running %d (limit 3), tenant-1 %d (limit 1)", peak.Load(), tenant1Peak.Load())
	}
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Errorf("one replica claimed everything: %v", byReplica)
	}
}

func TestCancel(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	a, b := open(t, dsn, "a", 0), open(t, dsn, "b", 0)
	ctx := context.Background()
	enqueue(t, a, "q", "t", "kq", false, roomy)
	enqueue(t, a, "r", "t", "kr", false, roomy)
	if w, err := b.Cancel(ctx, "q"); err != nil || w != sharedqueue.Queued {
		t.Fatalf("cancel a queued build: %v %v", w, err)
	}
	ids, _ := a.Claim(ctx, 5, sharedqueue.ClaimLimits{MaxConcurrent: 5})
	if !slices.Equal(ids, []string{"r"}) {
		t.Fatalf("claimed %v, want only r (q was cancelled)", ids)
	}
	if w, err := b.Cancel(ctx, "r"); err != nil || w != sharedqueue.Running {
		t.Fatalf("cancel a running build: %v %v", w, err)
	}
	select {
	case id := <-a.Cancels():
		if id != "r" {
			t.Fatalf("cancel notification for %s", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the running replica heard no cancel")
	}
	if c, err := a.Renew(ctx); err != nil || !slices.Equal(c, []string{"r"}) {
		t.Fatalf("Renew says cancel %v, %v; want r", c, err)
	}
	if w, _ := b.Cancel(ctx, "gone"); w != sharedqueue.Gone {
		t.Fatalf("cancel of nothing: %v", w)
	}
}

// A replica that stops renewing: the others get its running builds back
// after its lease, and its own queued ones; builds of a live replica stay.
func TestExpired(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	dead := open(t, dsn, "dead", time.Second)
	live := open(t, dsn, "live", time.Second)
	ctx := context.Background()
	enqueue(t, dead, "running-dead", "t", "k1", false, roomy)
	enqueue(t, live, "running-live", "t", "k2", false, roomy)
	if ids, _ := dead.Claim(ctx, 1, sharedqueue.ClaimLimits{MaxConcurrent: 5}); !slices.Equal(ids, []string{"running-dead"}) {
		t.Fatalf("dead claimed %v", ids)
	}
	if ids, _ := live.Claim(ctx, 1, sharedqueue.ClaimLimits{MaxConcurrent: 5}); !slices.Equal(ids, []string{"running-live"}) {
		t.Fatalf("live claimed %v", ids)
	}
	enqueue(t, dead, "owned-dead", "t", "k3", true, roomy)
	enqueue(t, dead, "free-queued", "t", "k4", false, roomy)
	if ids, _ := live.Expired(ctx); len(ids) != 0 {
		t.Fatalf("expired before any lease ran out: %v", ids)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for len(got) < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if _, err := live.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		ids, err := live.Expired(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"owned-dead", "running-dead"}) {
		t.Fatalf("expired %v, want the dead replica's running and owned builds", got)
	}
	// The dead replica's unowned queued build is the live one's to run.
	if ids, _ := live.Claim(ctx, 5, sharedqueue.ClaimLimits{MaxConcurrent: 5}); !slices.Equal(ids, []string{"free-queued"}) {
		t.Fatalf("live claimed %v, want free-queued", ids)
	}
}

// An append to a build's log by the history's PostgreSQL store wakes a
// replica's watcher of that build.
func TestEventsChanged(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	q := open(t, dsn, "a", 0)
	store, err := history.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Let the listener start (it wakes watchers once it listens).
	time.Sleep(300 * time.Millisecond)
	ch, stop := q.EventsChanged("b1")
	defer stop()
	other, stopOther := q.EventsChanged("b2")
	defer stopOther()
	if err := store.AppendEvents(context.Background(), "b1", []*buildv1.BuildEvent{{BuildId: "b1", Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after an append")
	}
	select {
	case <-other:
		t.Fatal("a watcher of another build woke")
	case <-time.After(200 * time.Millisecond):
	}
}

// A new process of a replica's name gets back what the last one left: the
// builds it ran and its owned queued ones, not others'.
func TestLeftovers(t *testing.T) {
	dsn := pgtest.FreshSchema(t, "queue_test")
	ctx := context.Background()
	old := open(t, dsn, "a", 0)
	other := open(t, dsn, "b", 0)
	enqueue(t, old, "ran", "t", "k1", false, roomy)
	if ids, _ := old.Claim(ctx, 1, sharedqueue.ClaimLimits{MaxConcurrent: 5}); !slices.Equal(ids, []string{"ran"}) {
		t.Fatalf("claimed %v", ids)
	}
	enqueue(t, old, "owned", "t", "k2", true, roomy)
	enqueue(t, old, "free", "t", "k3", false, roomy)
	enqueue(t, other, "others", "t", "k4", false, roomy)
	if ids, _ := other.Claim(ctx, 1, sharedqueue.ClaimLimits{MaxConcurrent: 5}); !slices.Equal(ids, []string{"free"}) {
		t.Fatalf("b claimed %v", ids)
	}
	restarted := open(t, dsn, "a", 0)
	got, err := restarted.Leftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"owned", "ran"}) {
		t.Fatalf("leftovers %v, want owned and ran", got)
	}
	if q, r, _ := restarted.Counts(ctx); q != 1 || r != 1 {
		t.Fatalf("left in the queue: %d queued, %d running; want b's running and the free queued one", q, r)
	}
}
