package server

import (
	"context"
	"errors"
	"path/filepath"
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
