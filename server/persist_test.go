package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// flakyStore fails its first fails AppendEvents calls.
type flakyStore struct {
	history.Store
	fails atomic.Int64
	calls atomic.Int64
}

func (f *flakyStore) AppendEvents(ctx context.Context, id string, evs []*buildv1.BuildEvent) error {
	f.calls.Add(1)
	if f.fails.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return f.Store.AppendEvents(ctx, id, evs)
}

func TestStoreEventsRetries(t *testing.T) {
	db, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	info := &buildv1.BuildInfo{BuildId: "b", State: buildv1.BuildState_BUILD_STATE_QUEUED}
	if err := db.PutBuild(ctx, info); err != nil {
		t.Fatal(err)
	}
	st := &flakyStore{Store: db}
	st.fails.Store(3)
	evs := []*buildv1.BuildEvent{{BuildId: "b", Seq: 1}, {BuildId: "b", Seq: 2}}
	if err := storeEvents(ctx, st, "b", evs); err != nil {
		t.Fatalf("a store that fails 3 times: %v", err)
	}
	if n := st.calls.Load(); n != 4 {
		t.Errorf("%d writes, want 4", n)
	}
	got, err := db.Events(ctx, "b", 0, 100)
	if err != nil || len(got) != 2 {
		t.Fatalf("stored %d events (%v), want 2, once each", len(got), err)
	}

	// A store that keeps failing: the error comes back within the window.
	st.fails.Store(1 << 30)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := storeEvents(cctx, st, "b", []*buildv1.BuildEvent{{BuildId: "b", Seq: 3}}); err == nil {
		t.Error("a failing store reported success")
	}
	if errorCode(errHistoryWrite{errors.New("disk full")}).String() != "Unavailable" {
		t.Error("a build stopped for its log is not Unavailable")
	}
}

// writeCountingStore counts the writes of records and of event batches.
type writeCountingStore struct {
	history.Store
	puts, appends atomic.Int64
}

func (c *writeCountingStore) PutBuild(ctx context.Context, b *buildv1.BuildInfo) error {
	c.puts.Add(1)
	return c.Store.PutBuild(ctx, b)
}

func (c *writeCountingStore) AppendEvents(ctx context.Context, id string, evs []*buildv1.BuildEvent) error {
	c.appends.Add(1)
	return c.Store.AppendEvents(ctx, id, evs)
}

// The record is written when it changes (accepted, each state, the end),
// not after every batch of events, which only move its LastSeq: the store
// keeps that from the events.
func TestRecordNotRewrittenPerEventBatch(t *testing.T) {
	fk := newFakeBuildKit()
	fk.hold = true
	cs := &writeCountingStore{}
	e := newLifecycleServer(t, fk, func(c *Config) {
		cs.Store = c.Store
		c.Store = cs
	})
	id := e.start(t, imageRequest("v1")).GetBuildId()
	e.started(t)
	// 30 batches while the build runs: each event stored before the next.
	b := e.s.activeBuild(id)
	for i := range 30 {
		before := cs.appends.Load()
		b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte(strings.Repeat("x", i))}}})
		for cs.appends.Load() == before {
			time.Sleep(100 * time.Microsecond)
		}
	}
	fk.release <- nil
	evs := e.watch(t, id)
	states := 0
	for _, ev := range evs {
		if ev.GetState() != nil {
			states++
		}
	}
	info := e.get(t, id)
	if info.GetLastSeq() != evs[len(evs)-1].GetSeq() {
		t.Errorf("record's last_seq %d, last event %d", info.GetLastSeq(), evs[len(evs)-1].GetSeq())
	}
	// Wait for the log to be stored to the end.
	deadline := time.Now().Add(5 * time.Second)
	for e.s.activeBuild(id) != nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	puts, appends := cs.puts.Load(), cs.appends.Load()
	t.Logf("%d events in %d batches, %d state changes, %d record writes", len(evs), appends, states, puts)
	if appends < 30 || puts > int64(states)+1 {
		t.Errorf("%d record writes for %d state changes (and the accept)", puts, states)
	}
	stored, err := cs.Store.GetBuild(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if stored.GetLastSeq() != evs[len(evs)-1].GetSeq() || stored.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Errorf("stored record: last_seq %d, state %v", stored.GetLastSeq(), stored.GetState())
	}
}
