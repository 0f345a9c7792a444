package history

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

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

// sizes are the file's size on disk and the part of it bbolt has used (its
// highest page): the file grows ahead of use, by doubling below 16 MiB.
func sizes(t *testing.T, s *Bolt, path string) (file, used int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return st.Size(), used
}

// serverEvents are n log events of about 200 bytes from seq from, like a
// build's step output.
func serverEvents(id string, from uint64, n int) []*buildv1.BuildEvent {
	out := make([]*buildv1.BuildEvent, n)
	for i := range out {
		out[i] = &buildv1.BuildEvent{BuildId: id, Seq: from + uint64(i),
			Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: bytes.Repeat([]byte{'a' + byte(i%26)}, 160)}}}
	}
	return out
}

func eventBytes(evs []*buildv1.BuildEvent) int64 {
	var n int64
	for _, e := range evs {
		n += int64(proto.Size(e))
	}
	return n
}

// A build with a 1 MiB record and 1000 batches of events grows the file by
// little more than its events: appending never rewrites the record. The
// way the server wrote before (the record put again after every batch, to
// move LastSeq) is measured beside it.
func TestAppendDoesNotRewriteRecord(t *testing.T) {
	ctx := context.Background()
	const batches, perBatch = 1000, 5
	grow := func(t *testing.T, putEachBatch bool) (events, used, file int64) {
		s, path := openTemp(t)
		s.db.NoSync = true // the pages written are the same; the test is quicker
		rec := info("big", "r", buildv1.BuildState_BUILD_STATE_BUILDING)
		rec.Error = &buildv1.BuildError{Message: strings.Repeat("x", 1<<20)}
		if err := s.PutBuild(ctx, rec); err != nil {
			t.Fatal(err)
		}
		file0, used0 := sizes(t, s, path)
		for i := range uint64(batches) {
			evs := serverEvents("big", i*perBatch+1, perBatch)
			events += eventBytes(evs)
			if err := s.AppendEvents(ctx, "big", evs); err != nil {
				t.Fatal(err)
			}
			if putEachBatch {
				rec.LastSeq = (i + 1) * perBatch
				if err := s.PutBuild(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got, err := s.GetBuild(ctx, "big"); err != nil || got.GetLastSeq() != batches*perBatch {
			t.Fatalf("GetBuild = LastSeq %d, %v", got.GetLastSeq(), err)
		}
		file1, used1 := sizes(t, s, path)
		return events, used1 - used0, file1 - file0
	}
	events, used, file := grow(t, false)
	t.Logf("%d batches of %d events (%d KiB of events) after a 1 MiB record: the store used %d KiB more, the file (which bbolt grows by doubling) by %d KiB",
		batches, perBatch, events>>10, used>>10, file>>10)
	_, oldUsed, oldFile := grow(t, true)
	t.Logf("the same with the record put after every batch (the server before): the store used %d KiB more, the file (which bbolt grows by doubling) by %d KiB",
		oldUsed>>10, oldFile>>10)
	// Keys, page headers, the B+tree's branches, the freelist: a quarter
	// more than the events' bytes, and a few pages.
	if limit := events*5/4 + 64<<10; used > limit {
		t.Errorf("the store used %d KiB more for %d KiB of events, want at most %d KiB", used>>10, events>>10, limit>>10)
	}
}

// Retention gives the space back: after many builds are deleted, writing as
// much again does not grow the file, because bbolt reuses the freed pages.
func TestDeleteReusesSpace(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	s.db.NoSync = true // the pages written are the same; the test is quicker
	const builds, batches, perBatch = 40, 20, 50
	write := func(round int) []string {
		var ids []string
		for b := range builds {
			id := fmt.Sprintf("r%d-b%02d", round, b)
			ids = append(ids, id)
			rec := info(id, "r", buildv1.BuildState_BUILD_STATE_SUCCEEDED)
			rec.Error = &buildv1.BuildError{Message: strings.Repeat("e", 64<<10)}
			if err := s.PutBuild(ctx, rec); err != nil {
				t.Fatal(err)
			}
			for i := range uint64(batches) {
				if err := s.AppendEvents(ctx, id, serverEvents(id, i*perBatch+1, perBatch)); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok, err := s.ClaimRequest(ctx, RequestKey{RequestID: id}, RequestClaim{BuildID: id}); err != nil || !ok {
				t.Fatalf("claim %s: %v %v", id, ok, err)
			}
		}
		return ids
	}
	ids := write(0)
	file0, used0 := sizes(t, s, path)
	t.Logf("%d builds (a 64 KiB record and %d events each): file %d KiB, used %d KiB", builds, batches*perBatch, file0>>10, used0>>10)
	// The first rewrite costs a little (a larger freelist, pages freed
	// apart); then the store stays the size it is.
	prev := used0 + used0/20
	for round := 1; round <= 3; round++ {
		if err := s.Delete(ctx, ids...); err != nil {
			t.Fatal(err)
		}
		ids = write(round)
		file, used := sizes(t, s, path)
		t.Logf("round %d, all deleted and as many written again: file %d KiB, used %d KiB", round, file>>10, used>>10)
		if file > file0 || used > prev {
			t.Errorf("round %d: file %d KiB, used %d KiB; want at most file %d KiB, used %d KiB",
				round, file>>10, used>>10, file0>>10, prev>>10)
		}
		prev = used
	}
}
