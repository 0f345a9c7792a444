package history

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The Store contract (storetest, run on Bolt by TestBoltContract) is in
// store_test.go; the tests here are of what only a file has: reopening it,
// and the space it takes.

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "history.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func info(id, repo string, state buildv1.BuildState) *buildv1.BuildInfo {
	return &buildv1.BuildInfo{BuildId: id, State: state, Request: &buildv1.CreateImageRequest{GitRepo: repo}}
}

func logEvents(id string, from, to uint64) []*buildv1.BuildEvent {
	var out []*buildv1.BuildEvent
	for s := from; s <= to; s++ {
		out = append(out, &buildv1.BuildEvent{BuildId: id, Seq: s,
			Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte(fmt.Sprint(s))}}})
	}
	return out
}

// Records, events, last seqs and request claims survive closing and
// opening the file again.
func TestSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if err := s.PutBuild(ctx, info("b1", "r", buildv1.BuildState_BUILD_STATE_BUILDING)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, "b1", logEvents("b1", 1, 300)); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendEvents(ctx, "b1", logEvents("b1", 301, 310)); err != nil {
		t.Fatal(err)
	}
	key := RequestKey{Tenant: "team", RequestID: "r1"}
	if _, ok, err := s.ClaimRequest(ctx, key, RequestClaim{BuildID: "b1", Fingerprint: "f1"}); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	s.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetBuild(ctx, "b1")
	if err != nil || got.GetState() != buildv1.BuildState_BUILD_STATE_BUILDING || got.GetLastSeq() != 310 {
		t.Fatalf("GetBuild = %v, %v; want BUILDING with LastSeq 310", got, err)
	}
	evs, err := s.Events(ctx, "b1", 300, 100)
	if err != nil || len(evs) != 10 || evs[0].GetSeq() != 301 {
		t.Fatalf("Events after 300 = %d events, %v", len(evs), err)
	}
	if c, err := s.LookupRequest(ctx, key); err != nil || c != (RequestClaim{BuildID: "b1", Fingerprint: "f1"}) {
		t.Fatalf("claim after reopen: %+v %v", c, err)
	}
	if err := s.Delete(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupRequest(ctx, key); err == nil {
		t.Fatal("claim after reopen and delete still there")
	}
}
