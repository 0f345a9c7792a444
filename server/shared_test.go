package server

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/sharedqueue"
)

// fakeQueue is the shared queue of the unit tests: the state replicas
// share, in memory (sharedqueue's own tests run it on PostgreSQL).
type fakeQueue struct {
	mu       sync.Mutex
	rows     map[string]*fakeRow
	order    []string
	replicas []*fakeReplica
	expired  []string // handed to the next Expired
}

type fakeRow struct {
	tenant, key, owner, replica string
	ready, running, cancel      bool
}

// fakeReplica is one replica's handle on a fakeQueue.
type fakeReplica struct {
	q       *fakeQueue
	name    string
	wake    chan struct{}
	cancels chan string
}

func (q *fakeQueue) replica(name string) *fakeReplica {
	r := &fakeReplica{q: q, name: name, wake: make(chan struct{}, 1), cancels: make(chan string, 16)}
	q.mu.Lock()
	q.replicas = append(q.replicas, r)
	q.mu.Unlock()
	return r
}

func (q *fakeQueue) wakeAll() {
	for _, r := range q.replicas {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (r *fakeReplica) Replica() string      { return r.name }
func (r *fakeReplica) Lease() time.Duration { return 30 * time.Millisecond }

func (r *fakeReplica) Enqueue(_ context.Context, e sharedqueue.Entry, lim sharedqueue.AdmitLimits) (string, error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	queued, running := 0, 0
	for id, row := range r.q.rows {
		if row.key == e.DedupKey {
			return id, nil
		}
		if row.running {
			running++
		} else {
			queued++
		}
	}
	if running >= lim.MaxConcurrent && queued >= lim.QueueSize {
		return "", sharedqueue.ErrQueueFull
	}
	row := &fakeRow{tenant: e.Tenant, key: e.DedupKey}
	if e.Owned {
		row.owner = r.name
	}
	r.q.rows[e.BuildID] = row
	r.q.order = append(r.q.order, e.BuildID)
	return "", nil
}

func (r *fakeReplica) Ready(_ context.Context, id string) error {
	r.q.mu.Lock()
	if row := r.q.rows[id]; row != nil {
		row.ready = true
	}
	r.q.wakeAll()
	r.q.mu.Unlock()
	return nil
}

func (r *fakeReplica) Claim(_ context.Context, n int, lim sharedqueue.ClaimLimits) ([]string, error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	running := 0
	for _, row := range r.q.rows {
		if row.running {
			running++
		}
	}
	var ids []string
	for _, id := range r.q.order {
		row := r.q.rows[id]
		if len(ids) >= n || running >= lim.MaxConcurrent {
			break
		}
		if row == nil || row.running || !row.ready || (row.owner != "" && row.owner != r.name) {
			continue
		}
		row.running, row.replica = true, r.name
		running++
		ids = append(ids, id)
	}
	return ids, nil
}

func (r *fakeReplica) Done(_ context.Context, id string) error {
	r.q.mu.Lock()
	delete(r.q.rows, id)
	r.q.order = slices.DeleteFunc(r.q.order, func(o string) bool { return o == id })
	r.q.wakeAll()
	r.q.mu.Unlock()
	return nil
}

func (r *fakeReplica) Cancel(_ context.Context, id string) (sharedqueue.Where, error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	row := r.q.rows[id]
	switch {
	case row == nil:
		return sharedqueue.Gone, nil
	case !row.running:
		delete(r.q.rows, id)
		return sharedqueue.Queued, nil
	}
	row.cancel = true
	for _, o := range r.q.replicas {
		if o.name == row.replica {
			o.cancels <- id
		}
	}
	return sharedqueue.Running, nil
}

func (r *fakeReplica) Renew(context.Context) ([]string, error) { return nil, nil }

func (r *fakeReplica) Expired(context.Context) ([]string, error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	ids := r.q.expired
	r.q.expired = nil
	for _, id := range ids {
		delete(r.q.rows, id)
	}
	return ids, nil
}

func (r *fakeReplica) Wake() <-chan struct{}  { return r.wake }
func (r *fakeReplica) Cancels() <-chan string { return r.cancels }
func (r *fakeReplica) EventsChanged(string) (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

// twoReplicas are two servers sharing one store and one fake queue, each
// on a fake BuildKit of its own.
func twoReplicas(t *testing.T, fks [2]*fakeBuildKit) (*fakeQueue, [2]*lifecycleEnv) {
	t.Helper()
	store, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	q := &fakeQueue{rows: map[string]*fakeRow{}}
	var envs [2]*lifecycleEnv
	for i, name := range []string{"a", "b"} {
		r := q.replica(name)
		envs[i] = newLifecycleServerOn(t, fks[i], store, func(c *Config) {
			c.Shared = r
			c.MaxConcurrent = 1
		})
	}
	return q, envs
}

// A build started on one replica is run by one of them, watched and got
// on both; an identical request on the other joins it; a cancel on the
// replica that does not run it stops it.
func TestSharedQueueAcrossReplicas(t *testing.T) {
	fks := [2]*fakeBuildKit{newFakeBuildKit(), newFakeBuildKit()}
	fks[0].hold, fks[1].hold = true, true
	_, envs := twoReplicas(t, fks)
	id := envs[0].start(t, imageRequest("v1")).GetBuildId()
	// One of them runs it.
	var runner int
	select {
	case <-fks[0].started:
		runner = 0
	case <-fks[1].started:
		runner = 1
	case <-time.After(5 * time.Second):
		t.Fatal("no replica ran the build")
	}
	other := envs[1-runner]
	// An identical request on the other replica joins it.
	joined, err := other.s.StartBuild(context.Background(), &buildv1.StartBuildRequest{Request: imageRequest("v1")})
	if err != nil || joined.GetBuildId() != id {
		t.Fatalf("the identical request: %v, %v; want to join %s", joined.GetBuildId(), err, id)
	}
	other.until(t, id, "building, as the other replica sees it", func(b *buildv1.BuildInfo) bool {
		return b.GetState() == buildv1.BuildState_BUILD_STATE_BUILDING
	})
	// Cancelled through the other replica.
	if _, err := other.s.CancelBuild(context.Background(), &buildv1.CancelBuildRequest{BuildId: id}); err != nil {
		t.Fatal(err)
	}
	evs := other.watch(t, id)
	if last := evs[len(evs)-1]; last.GetError().GetReason() != reasonCancelled {
		t.Fatalf("the build ended with %v, want cancelled", last)
	}
	for i, e := range evs {
		if e.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.GetSeq())
		}
	}
	if got := envs[runner].get(t, id).GetState(); got != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("the runner sees %v", got)
	}
}

// A queued build is cancelled on any replica; a gone replica's build is
// ended INTERRUPTED by the others.
func TestSharedQueueCancelAndExpiry(t *testing.T) {
	fks := [2]*fakeBuildKit{newFakeBuildKit(), newFakeBuildKit()}
	fks[0].hold, fks[1].hold = true, true
	q, envs := twoReplicas(t, fks)
	first := envs[0].start(t, imageRequest("v1")).GetBuildId()
	select {
	case <-fks[0].started:
	case <-fks[1].started:
	case <-time.After(5 * time.Second):
		t.Fatal("no replica ran the first build")
	}
	// One slot in all (MaxConcurrent 1 on both): the second waits.
	second := envs[1].start(t, imageRequest("v2")).GetBuildId()
	resp, err := envs[0].s.CancelBuild(context.Background(), &buildv1.CancelBuildRequest{BuildId: second})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("the queued build: %v", resp.GetBuild().GetState())
	}
	evs := envs[1].watch(t, second)
	if evs[len(evs)-1].GetError().GetReason() != reasonCancelled {
		t.Fatalf("its log ends %v", evs[len(evs)-1])
	}

	// A build stored as queued, whose replica is gone, is handed back.
	gone := &buildv1.BuildInfo{BuildId: "20260101-000000.000000-0123456789", State: buildv1.BuildState_BUILD_STATE_QUEUED,
		Request: imageRequest("gone")}
	if err := envs[0].store.PutBuild(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	q.expired = append(q.expired, gone.BuildId)
	q.mu.Unlock()
	info := envs[0].until(t, gone.BuildId, "interrupted", func(b *buildv1.BuildInfo) bool {
		return b.GetState() == buildv1.BuildState_BUILD_STATE_INTERRUPTED
	})
	if info.GetError().GetReason() != reasonInterrupted {
		t.Errorf("the gone replica's build: %v", info.GetError())
	}
	fks[0].stop()
	fks[1].stop()
	_ = first
}

func (r *fakeReplica) Leftovers(context.Context) ([]string, error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	var ids []string
	for id, row := range r.q.rows {
		if (row.running && row.replica == r.name) || (!row.running && row.owner == r.name) {
			ids = append(ids, id)
			delete(r.q.rows, id)
		}
	}
	return ids, nil
}

func (r *fakeReplica) Counts(context.Context) (queued, running int, err error) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	for _, row := range r.q.rows {
		if row.running {
			running++
		} else {
			queued++
		}
	}
	return queued, running, nil
}
