// Package storetest is the contract of history.Store as tests: Run checks
// that a store keeps records, seq-numbered event logs and request claims
// the way the server relies on, so that every store (bbolt, PostgreSQL)
// passes the same tests.
//
// A store's own test calls Run with a function that opens an empty store
// for one test:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) history.Store {
//			s, err := history.Open(filepath.Join(t.TempDir(), "history.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Each test opens its own store and the tests run in parallel, so open must
// give each call a store of its own (a file, a database or a schema).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Run runs the contract's tests against the stores open makes, each as a
// parallel subtest with a store of its own.
func Run(t *testing.T, open func(t *testing.T) history.Store) {
	tests := []struct {
		name string
		test func(*testing.T, history.Store)
	}{
		{"PutGetReplace", testPutGetReplace},
		{"NotFound", testNotFound},
		{"Events", testEvents},
		{"EventsRetriedBatch", testEventsRetriedBatch},
		{"LastSeq", testLastSeq},
		{"AppendKeepsRecord", testAppendKeepsRecord},
		{"ListFilters", testListFilters},
		{"ListOrderAndBounds", testListOrderAndBounds},
		{"ListPagesBothWays", testListPagesBothWays},
		{"ListMatchPages", testListMatchPages},
		{"ListLimit", testListLimit},
		{"ClaimRequest", testClaimRequest},
		{"Delete", testDelete},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConcurrentClaims", testConcurrentClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.test(t, open(t))
		})
	}
}

var (
	succeeded = buildv1.BuildState_BUILD_STATE_SUCCEEDED
	failed    = buildv1.BuildState_BUILD_STATE_FAILED
	building  = buildv1.BuildState_BUILD_STATE_BUILDING
)

// info is a record of build id, of git repository repo, in state.
func info(id, repo string, state buildv1.BuildState) *buildv1.BuildInfo {
	return &buildv1.BuildInfo{BuildId: id, State: state, Request: &buildv1.CreateImageRequest{GitRepo: repo}}
}

// logEvents are log events of build id with seqs from to to, each with its
// seq as its data.
func logEvents(id string, from, to uint64) []*buildv1.BuildEvent {
	var out []*buildv1.BuildEvent
	for s := from; s <= to; s++ {
		out = append(out, &buildv1.BuildEvent{BuildId: id, Seq: s,
			Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte(fmt.Sprint(s))}}})
	}
	return out
}

func put(t *testing.T, s history.Store, builds ...*buildv1.BuildInfo) {
	t.Helper()
	for _, b := range builds {
		if err := s.PutBuild(context.Background(), b); err != nil {
			t.Fatalf("PutBuild %s: %v", b.GetBuildId(), err)
		}
	}
}

func appendEvents(t *testing.T, s history.Store, id string, events []*buildv1.BuildEvent) {
	t.Helper()
	if err := s.AppendEvents(context.Background(), id, events); err != nil {
		t.Fatalf("AppendEvents %s: %v", id, err)
	}
}

func get(t *testing.T, s history.Store, id string) *buildv1.BuildInfo {
	t.Helper()
	b, err := s.GetBuild(context.Background(), id)
	if err != nil {
		t.Fatalf("GetBuild %s: %v", id, err)
	}
	return b
}

// seqs are the seqs of a build's events after after, up to limit, as
// "first-last" runs: "1-310", or "" for none.
func seqs(t *testing.T, s history.Store, id string, after uint64, limit int) string {
	t.Helper()
	evs, err := s.Events(context.Background(), id, after, limit)
	if err != nil {
		t.Fatalf("Events(%s, after %d, limit %d): %v", id, after, limit, err)
	}
	var runs []string
	for i, e := range evs {
		if got, want := string(e.GetLog().GetData()), fmt.Sprint(e.GetSeq()); e.GetLog() != nil && got != want {
			t.Errorf("event seq %d holds %q, want %q", e.GetSeq(), got, want)
		}
		if i > 0 && e.GetSeq() == evs[i-1].GetSeq()+1 {
			runs[len(runs)-1] = strings.Split(runs[len(runs)-1], "-")[0] + fmt.Sprintf("-%d", e.GetSeq())
			continue
		}
		runs = append(runs, fmt.Sprintf("%d-%d", e.GetSeq(), e.GetSeq()))
	}
	return strings.Join(runs, ",")
}

// listIDs is the ids List returns for f, then " +" if it says more match.
func listIDs(t *testing.T, s history.Store, f history.Filter) string {
	t.Helper()
	builds, more, err := s.List(context.Background(), f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	var ids []string
	for _, b := range builds {
		ids = append(ids, b.GetBuildId())
	}
	out := strings.Join(ids, " ")
	if more {
		out += " +"
	}
	return out
}

// A record comes back as it was put, and a second put replaces it whole.
func testPutGetReplace(t *testing.T, s history.Store) {
	first := info("b1", "https://example.com/a.git", building)
	first.Tenant = "team"
	first.Commit = "0123456789abcdef0123456789abcdef01234567"
	first.Error = &buildv1.BuildError{Message: strings.Repeat("x", 100_000)}
	put(t, s, first)
	if got := get(t, s, "b1"); !proto.Equal(got, first) {
		t.Fatalf("GetBuild = %v, want %v", got, first)
	}
	second := info("b1", "https://example.com/b.git", succeeded)
	second.Tenant = "other"
	put(t, s, second)
	if got := get(t, s, "b1"); !proto.Equal(got, second) {
		t.Fatalf("after replace, GetBuild = %v, want %v", got, second)
	}
	// The replaced record's tenant, repo and state no longer select it.
	if got := listIDs(t, s, history.Filter{Tenant: "team", Limit: 10}); got != "" {
		t.Errorf("the old tenant lists %q", got)
	}
	if got := listIDs(t, s, history.Filter{Tenant: "other", Repo: "https://example.com/b.git", States: []buildv1.BuildState{succeeded}, Limit: 10}); got != "b1" {
		t.Errorf("the new tenant, repo and state list %q, want b1", got)
	}
}

// An unknown build or request is history.ErrNotFound, as errors.Is sees it.
func testNotFound(t *testing.T, s history.Store) {
	ctx := context.Background()
	put(t, s, info("b1", "r", succeeded))
	appendEvents(t, s, "orphan", logEvents("orphan", 1, 3)) // events, no record
	tests := []struct {
		name string
		call func() error
	}{
		{"GetBuild", func() error { _, err := s.GetBuild(ctx, "nope"); return err }},
		{"Events", func() error { _, err := s.Events(ctx, "nope", 0, 10); return err }},
		{"GetBuild of a build with events and no record", func() error { _, err := s.GetBuild(ctx, "orphan"); return err }},
		{"Events of a build with events and no record", func() error { _, err := s.Events(ctx, "orphan", 0, 10); return err }},
		{"LookupRequest", func() error {
			_, err := s.LookupRequest(ctx, history.RequestKey{Tenant: "t", RequestID: "r"})
			return err
		}},
	}
	for _, tt := range tests {
		if err := tt.call(); !errors.Is(err, history.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", tt.name, err)
		}
	}
	if err := s.Delete(ctx, "nope", "also-nope"); err != nil {
		t.Errorf("Delete of unknown builds: %v", err)
	}
	if err := s.AppendEvents(ctx, "b1", nil); err != nil {
		t.Errorf("AppendEvents of no events: %v", err)
	}
}

// Events come back in seq order, after a seq and up to a limit, whatever
// the batches they were appended in.
func testEvents(t *testing.T, s history.Store) {
	put(t, s, info("b1", "r", building), info("b2", "r", building), info("empty", "r", building))
	appendEvents(t, s, "b1", logEvents("b1", 1, 300))
	appendEvents(t, s, "b2", logEvents("b2", 1, 5))
	appendEvents(t, s, "b1", logEvents("b1", 301, 310))
	appendEvents(t, s, "b1", logEvents("b1", 311, 311))
	tests := []struct {
		id    string
		after uint64
		limit int
		want  string
	}{
		{"b1", 0, 1000, "1-311"},
		{"b1", 305, 1000, "306-311"},
		{"b1", 10, 7, "11-17"},
		{"b1", 299, 3, "300-302"},
		{"b1", 311, 10, ""},
		{"b1", 5000, 10, ""},
		{"b1", 0, 0, ""},
		{"b2", 0, 1000, "1-5"},
		{"b2", 4, 1, "5-5"},
		{"empty", 0, 10, ""},
	}
	for _, tt := range tests {
		if got := seqs(t, s, tt.id, tt.after, tt.limit); got != tt.want {
			t.Errorf("Events(%s, after %d, limit %d) = %s, want %s", tt.id, tt.after, tt.limit, got, tt.want)
		}
	}
	// Every kind of event comes back as it was.
	evs, err := s.Events(context.Background(), "b2", 0, 1)
	if err != nil || len(evs) != 1 || !proto.Equal(evs[0], logEvents("b2", 1, 1)[0]) {
		t.Errorf("first event of b2 = %v, %v", evs, err)
	}
	state := &buildv1.BuildEvent{BuildId: "b2", Seq: 6, Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: failed, Message: "m"}}}
	appendEvents(t, s, "b2", []*buildv1.BuildEvent{state})
	if evs, err := s.Events(context.Background(), "b2", 5, 10); err != nil || len(evs) != 1 || !proto.Equal(evs[0], state) {
		t.Errorf("state event of b2 = %v, %v", evs, err)
	}
}

// A batch appended again (the server retries a write that may have
// succeeded) is stored once.
func testEventsRetriedBatch(t *testing.T, s history.Store) {
	put(t, s, info("b1", "r", building))
	appendEvents(t, s, "b1", logEvents("b1", 1, 50))
	appendEvents(t, s, "b1", logEvents("b1", 1, 50))
	appendEvents(t, s, "b1", logEvents("b1", 40, 60))
	if got := seqs(t, s, "b1", 0, 1000); got != "1-60" {
		t.Errorf("Events = %s, want 1-60", got)
	}
	if got := get(t, s, "b1").GetLastSeq(); got != 60 {
		t.Errorf("LastSeq = %d, want 60", got)
	}
}

// LastSeq is the greater of the record's and the highest seq appended, in
// GetBuild and in List, whichever was written first.
func testLastSeq(t *testing.T, s history.Store) {
	ctx := context.Background()
	withSeq := func(id string, seq uint64) *buildv1.BuildInfo {
		b := info(id, "r", building)
		b.LastSeq = seq
		return b
	}
	put(t, s, withSeq("appended", 0), withSeq("record-ahead", 90), withSeq("none", 0), withSeq("record-only", 7), withSeq("put-after", 0))
	appendEvents(t, s, "appended", logEvents("appended", 1, 40))
	appendEvents(t, s, "appended", logEvents("appended", 41, 42))
	appendEvents(t, s, "record-ahead", logEvents("record-ahead", 1, 10))
	// Events first, then the record.
	appendEvents(t, s, "events-first", logEvents("events-first", 1, 12))
	put(t, s, withSeq("events-first", 3))
	// A later put with an older LastSeq (the writer's copy of the record
	// lags its log) does not hide appended events.
	appendEvents(t, s, "put-after", logEvents("put-after", 1, 20))
	put(t, s, withSeq("put-after", 5))
	want := map[string]uint64{"appended": 42, "record-ahead": 90, "none": 0, "record-only": 7, "events-first": 12, "put-after": 20}
	for id, seq := range want {
		if got := get(t, s, id).GetLastSeq(); got != seq {
			t.Errorf("GetBuild(%s).LastSeq = %d, want %d", id, got, seq)
		}
	}
	for _, asc := range []bool{false, true} {
		builds, _, err := s.List(ctx, history.Filter{Limit: 10, Ascending: asc})
		if err != nil {
			t.Fatal(err)
		}
		if len(builds) != len(want) {
			t.Errorf("List (ascending %v) = %d builds, want %d", asc, len(builds), len(want))
		}
		for _, b := range builds {
			if got := b.GetLastSeq(); got != want[b.GetBuildId()] {
				t.Errorf("List (ascending %v): %s LastSeq = %d, want %d", asc, b.GetBuildId(), got, want[b.GetBuildId()])
			}
		}
	}
}

// Appending events leaves the rest of the record as it was put.
func testAppendKeepsRecord(t *testing.T, s history.Store) {
	rec := info("b1", "r", building)
	rec.Tenant = "team"
	rec.Error = &buildv1.BuildError{Message: strings.Repeat("e", 1<<20)}
	put(t, s, rec)
	for i := uint64(0); i < 20; i++ {
		appendEvents(t, s, "b1", logEvents("b1", i*5+1, i*5+5))
	}
	got := get(t, s, "b1")
	if got.GetLastSeq() != 100 {
		t.Errorf("LastSeq = %d, want 100", got.GetLastSeq())
	}
	got.LastSeq = 0
	if !proto.Equal(got, rec) {
		t.Error("the record changed when events were appended")
	}
}

// The fixture of the List tests: b1..b9, b3, b6 and b9 failed, the rest
// succeeded; the even ones of repo "b", the odd ones of "a"; b8 and b9 of
// tenant "other", the rest of the empty tenant. Put in an order that is
// not the ids' order, so that List must sort by id.
func listFixture(t *testing.T, s history.Store) {
	t.Helper()
	for _, i := range []int{5, 2, 9, 1, 7, 3, 8, 4, 6} {
		state, repo := succeeded, "a"
		if i%3 == 0 {
			state = failed
		}
		if i%2 == 0 {
			repo = "b"
		}
		b := info(fmt.Sprintf("b%d", i), repo, state)
		if i >= 8 {
			b.Tenant = "other"
		}
		put(t, s, b)
	}
}

func testListFilters(t *testing.T, s history.Store) {
	ctx := context.Background()
	listFixture(t, s)
	tests := []struct {
		name string
		f    history.Filter
		want string // the ids, then " +" when more match
	}{
		{"newest first", history.Filter{Limit: 3, AnyTenant: true}, "b9 b8 b7 +"},
		{"second page", history.Filter{Limit: 3, Before: "b7", AnyTenant: true}, "b6 b5 b4 +"},
		{"last page", history.Filter{Limit: 3, Before: "b4", AnyTenant: true}, "b3 b2 b1"},
		{"token past the end", history.Filter{Limit: 3, Before: "c", AnyTenant: true}, "b9 b8 b7 +"},
		{"by state", history.Filter{Limit: 10, States: []buildv1.BuildState{failed}, AnyTenant: true}, "b9 b6 b3"},
		{"by two states", history.Filter{Limit: 10, States: []buildv1.BuildState{failed, building}, AnyTenant: true}, "b9 b6 b3"},
		{"by a state none is in", history.Filter{Limit: 10, States: []buildv1.BuildState{building}, AnyTenant: true}, ""},
		{"by repo", history.Filter{Limit: 10, Repo: "b", AnyTenant: true}, "b8 b6 b4 b2"},
		{"by both", history.Filter{Limit: 1, Repo: "b", States: []buildv1.BuildState{failed}, AnyTenant: true}, "b6"},
		{"the empty tenant by default", history.Filter{Limit: 3}, "b7 b6 b5 +"},
		{"by tenant", history.Filter{Limit: 10, Tenant: "other"}, "b9 b8"},
		{"by tenant and repo", history.Filter{Limit: 10, Tenant: "other", Repo: "b"}, "b8"},
		{"a tenant with none", history.Filter{Limit: 10, Tenant: "nobody"}, ""},
		{"any tenant ignores the tenant", history.Filter{Limit: 10, Tenant: "nobody", AnyTenant: true, Repo: "a"}, "b9 b7 b5 b3 b1"},
		{"oldest first by tenant", history.Filter{Limit: 1, Tenant: "other", Ascending: true}, "b8 +"},
	}
	for _, tt := range tests {
		if got := listIDs(t, s, tt.f); got != tt.want {
			t.Errorf("%s: List = %q, want %q", tt.name, got, tt.want)
		}
	}
	if err := s.Delete(ctx, "b9", "b8"); err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, s, history.Filter{Limit: 2, AnyTenant: true}); got != "b7 b6 +" {
		t.Errorf("after delete: %q", got)
	}
}

// orderFixture is a store of builds b01 to b09: b03, b06 and b09 failed,
// the others succeeded; b02 and b04 are of repo "other", the rest of "r".
func orderFixture(t *testing.T, s history.Store) {
	t.Helper()
	for _, i := range []int{9, 1, 8, 2, 7, 3, 6, 4, 5} {
		state, repo := succeeded, "r"
		if i%3 == 0 {
			state = failed
		}
		if i == 2 || i == 4 {
			repo = "other"
		}
		put(t, s, info(fmt.Sprintf("b%02d", i), repo, state))
	}
}

func testListOrderAndBounds(t *testing.T, s history.Store) {
	orderFixture(t, s)
	isFailed := func(b *buildv1.BuildInfo) bool { return b.GetState() == failed }
	odd := func(b *buildv1.BuildInfo) bool { return b.GetBuildId()[2]%2 == 1 }
	type F = history.Filter
	tests := []struct {
		name string
		f    history.Filter
		want string // the ids, then " +" when more match
	}{
		{"newest first", F{Limit: 3}, "b09 b08 b07 +"},
		{"newest first, all", F{Limit: 9}, "b09 b08 b07 b06 b05 b04 b03 b02 b01"},
		{"newest first, more than all", F{Limit: 100}, "b09 b08 b07 b06 b05 b04 b03 b02 b01"},
		{"before", F{Before: "b05", Limit: 3}, "b04 b03 b02 +"},
		{"before, to the end", F{Before: "b03", Limit: 3}, "b02 b01"},
		{"before an id not stored", F{Before: "b05x", Limit: 2}, "b05 b04 +"},
		{"before every id", F{Before: "a", Limit: 2}, ""},
		{"before past every id", F{Before: "c", Limit: 2}, "b09 b08 +"},
		{"oldest first", F{Ascending: true, Limit: 3}, "b01 b02 b03 +"},
		{"oldest first, all", F{Ascending: true, Limit: 9}, "b01 b02 b03 b04 b05 b06 b07 b08 b09"},
		{"after", F{Ascending: true, After: "b05", Limit: 3}, "b06 b07 b08 +"},
		{"after, to the end", F{Ascending: true, After: "b07", Limit: 3}, "b08 b09"},
		{"after the last", F{Ascending: true, After: "b09", Limit: 3}, ""},
		{"after an id not stored", F{Ascending: true, After: "b05x", Limit: 2}, "b06 b07 +"},
		{"after before every id", F{Ascending: true, After: "a", Limit: 2}, "b01 b02 +"},
		{"between, oldest first", F{Ascending: true, After: "b02", Before: "b06", Limit: 9}, "b03 b04 b05"},
		{"between, newest first", F{After: "b02", Before: "b06", Limit: 9}, "b05 b04 b03"},
		{"between, no more past the bound", F{After: "b02", Before: "b06", Limit: 3}, "b05 b04 b03"},
		{"between, oldest first, more", F{Ascending: true, After: "b02", Before: "b06", Limit: 2}, "b03 b04 +"},
		{"between, empty", F{After: "b05", Before: "b06", Limit: 3}, ""},
		{"match", F{Match: isFailed, Limit: 9}, "b09 b06 b03"},
		{"match, paged", F{Match: isFailed, Limit: 1}, "b09 +"},
		{"match, oldest first, paged", F{Match: isFailed, Ascending: true, After: "b03", Limit: 1}, "b06 +"},
		{"match, last page", F{Match: isFailed, Ascending: true, After: "b06", Limit: 1}, "b09"},
		{"match and states and repo", F{Match: odd, States: []buildv1.BuildState{succeeded}, Repo: "r", Limit: 9}, "b07 b05 b01"},
		{"match keeps nothing", F{Match: func(*buildv1.BuildInfo) bool { return false }, Limit: 9}, ""},
	}
	for _, tt := range tests {
		if got := listIDs(t, s, tt.f); got != tt.want {
			t.Errorf("%s: List = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Paging with the last id as the cursor lists every build once, in order,
// both ways.
func testListPagesBothWays(t *testing.T, s history.Store) {
	orderFixture(t, s)
	for _, asc := range []bool{true, false} {
		f := history.Filter{Ascending: asc, Limit: 2}
		var all []string
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("paging does not end")
			}
			builds, more, err := s.List(context.Background(), f)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range builds {
				all = append(all, b.GetBuildId())
			}
			if !more {
				break
			}
			last := builds[len(builds)-1].GetBuildId()
			if asc {
				f.After = last
			} else {
				f.Before = last
			}
		}
		want := []string{"b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b09"}
		if !asc {
			slices.Reverse(want)
		}
		if !slices.Equal(all, want) {
			t.Errorf("ascending %v: pages list %q, want %q", asc, all, want)
		}
	}
}

// Match may keep few of many builds: the store reads on until it has Limit
// of them (and one more to say there are more), however many it skips.
func testListMatchPages(t *testing.T, s history.Store) {
	const n = 300
	for i := 1; i <= n; i++ {
		b := info(fmt.Sprintf("m%04d", i), "r", succeeded)
		if i%2 == 0 {
			b.Tenant = "even"
		}
		put(t, s, b)
	}
	every := func(k int) func(*buildv1.BuildInfo) bool {
		return func(b *buildv1.BuildInfo) bool {
			i, err := strconv.Atoi(strings.TrimPrefix(b.GetBuildId(), "m"))
			return err == nil && i%k == 0
		}
	}
	var calls sync.Map // Match is called once per kept record at most
	counted := func(b *buildv1.BuildInfo) bool {
		if _, dup := calls.LoadOrStore(b.GetBuildId(), true); dup {
			t.Errorf("Match called twice on %s", b.GetBuildId())
		}
		return every(75)(b)
	}
	type F = history.Filter
	tests := []struct {
		name string
		f    history.Filter
		want string
	}{
		{"sparse, newest first", F{Match: every(75), AnyTenant: true, Limit: 3}, "m0300 m0225 m0150 +"},
		{"sparse, to the end", F{Match: every(75), AnyTenant: true, Limit: 4}, "m0300 m0225 m0150 m0075"},
		{"sparse, oldest first", F{Match: every(75), AnyTenant: true, Ascending: true, Limit: 2}, "m0075 m0150 +"},
		{"sparse, after", F{Match: every(75), AnyTenant: true, Ascending: true, After: "m0150", Limit: 2}, "m0225 m0300"},
		{"sparse, before", F{Match: every(75), AnyTenant: true, Before: "m0225", Limit: 1}, "m0150 +"},
		{"sparse, with tenant", F{Match: every(50), Tenant: "even", Limit: 10}, "m0300 m0250 m0200 m0150 m0100 m0050"},
		{"sparse, none match", F{Match: every(1_000_000), AnyTenant: true, Limit: 1}, ""},
		{"sparse, one match at the end", F{Match: func(b *buildv1.BuildInfo) bool { return b.GetBuildId() == "m0001" }, AnyTenant: true, Limit: 1}, "m0001"},
		{"called once per record", F{Match: counted, AnyTenant: true, Limit: 10}, "m0300 m0225 m0150 m0075"},
	}
	for _, tt := range tests {
		if got := listIDs(t, s, tt.f); got != tt.want {
			t.Errorf("%s: List = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A listing must say how many builds it wants.
func testListLimit(t *testing.T, s history.Store) {
	put(t, s, info("b1", "r", succeeded))
	for _, limit := range []int{0, -1} {
		if _, _, err := s.List(context.Background(), history.Filter{Limit: limit, AnyTenant: true}); err == nil {
			t.Errorf("List with limit %d should fail", limit)
		}
	}
}

// A key is claimed once; a second claim gets the first one back; keys of
// different tenants and ids are distinct even when their concatenations
// agree; deleting the build frees the key.
func testClaimRequest(t *testing.T, s history.Store) {
	ctx := context.Background()
	a := history.RequestKey{Tenant: "team", RequestID: "r1"}
	put(t, s, info("b1", "r", building))
	got, ok, err := s.ClaimRequest(ctx, a, history.RequestClaim{BuildID: "b1", Fingerprint: "f1"})
	if err != nil || !ok || got != (history.RequestClaim{BuildID: "b1", Fingerprint: "f1"}) {
		t.Fatalf("first claim = %+v %v %v", got, ok, err)
	}
	got, ok, err = s.ClaimRequest(ctx, a, history.RequestClaim{BuildID: "b2", Fingerprint: "f2"})
	if err != nil || ok || got != (history.RequestClaim{BuildID: "b1", Fingerprint: "f1"}) {
		t.Fatalf("second claim = %+v %v %v, want b1/f1 not claimed", got, ok, err)
	}
	if c, err := s.LookupRequest(ctx, a); err != nil || c != (history.RequestClaim{BuildID: "b1", Fingerprint: "f1"}) {
		t.Fatalf("lookup = %+v %v", c, err)
	}
	others := []history.RequestKey{
		{Tenant: "team", RequestID: "r2"},
		{Tenant: "", RequestID: "r1"},
		{Tenant: "tea", RequestID: "mr1"},
		{Tenant: "team:", RequestID: "r1"},
		{Tenant: "team", RequestID: "R1"},
	}
	for _, other := range others {
		if _, err := s.LookupRequest(ctx, other); !errors.Is(err, history.ErrNotFound) {
			t.Errorf("lookup %+v: %v, want ErrNotFound", other, err)
		}
	}
	// The same id in another tenant is a claim of its own.
	b := history.RequestKey{Tenant: "", RequestID: "r1"}
	if got, ok, err := s.ClaimRequest(ctx, b, history.RequestClaim{BuildID: "b2"}); err != nil || !ok || got.BuildID != "b2" {
		t.Fatalf("claim of another tenant = %+v %v %v", got, ok, err)
	}
	// Deleting b1 frees a, and only a.
	if err := s.Delete(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupRequest(ctx, a); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("after delete: %v, want ErrNotFound", err)
	}
	if c, err := s.LookupRequest(ctx, b); err != nil || c.BuildID != "b2" {
		t.Fatalf("the other tenant's claim after delete: %+v %v", c, err)
	}
	if got, ok, err := s.ClaimRequest(ctx, a, history.RequestClaim{BuildID: "b3", Fingerprint: "f3"}); err != nil || !ok || got.BuildID != "b3" {
		t.Fatalf("claim after delete: %+v %v %v", got, ok, err)
	}
	// A claim goes with its build even if the build was never put.
	if err := s.Delete(ctx, "b2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupRequest(ctx, b); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("claim of an unrecorded build after its delete: %v, want ErrNotFound", err)
	}
}

// Delete removes builds with their events and last seq: an id put again
// starts empty. Other builds keep theirs.
func testDelete(t *testing.T, s history.Store) {
	ctx := context.Background()
	put(t, s, info("b1", "r", succeeded), info("b2", "r", succeeded), info("b3", "r", succeeded))
	for _, id := range []string{"b1", "b2", "b3"} {
		appendEvents(t, s, id, logEvents(id, 1, 30))
	}
	if err := s.Delete(ctx, "b1", "b3", "b1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b1", "b3"} {
		if _, err := s.GetBuild(ctx, id); !errors.Is(err, history.ErrNotFound) {
			t.Errorf("GetBuild(%s) after delete: %v, want ErrNotFound", id, err)
		}
		if _, err := s.Events(ctx, id, 0, 10); !errors.Is(err, history.ErrNotFound) {
			t.Errorf("Events(%s) after delete: %v, want ErrNotFound", id, err)
		}
	}
	if got := listIDs(t, s, history.Filter{Limit: 10}); got != "b2" {
		t.Errorf("List after delete = %q, want b2", got)
	}
	if got := seqs(t, s, "b2", 0, 100); got != "1-30" {
		t.Errorf("b2's events after deleting the others = %s", got)
	}
	put(t, s, info("b1", "r", building))
	if got := seqs(t, s, "b1", 0, 100); got != "" {
		t.Errorf("b1 put again has events %s", got)
	}
	if got := get(t, s, "b1").GetLastSeq(); got != 0 {
		t.Errorf("b1 put again has LastSeq %d", got)
	}
	if err := s.Delete(ctx); err != nil {
		t.Errorf("Delete of nothing: %v", err)
	}
}

// Several writers at once, as the server's builds are: each build's log
// comes out whole and in order.
func testConcurrentAppends(t *testing.T, s history.Store) {
	const writers, batches, size = 6, 15, 20
	var wg sync.WaitGroup
	for w := range writers {
		id := fmt.Sprintf("w%d", w)
		put(t, s, info(id, "r", building))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range uint64(batches) {
				if err := s.AppendEvents(context.Background(), id, logEvents(id, i*size+1, i*size+size)); err != nil {
					t.Errorf("AppendEvents %s: %v", id, err)
					return
				}
				if _, err := s.GetBuild(context.Background(), id); err != nil {
					t.Errorf("GetBuild %s: %v", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := fmt.Sprintf("1-%d", batches*size)
	for w := range writers {
		id := fmt.Sprintf("w%d", w)
		if got := seqs(t, s, id, 0, 10_000); got != want {
			t.Errorf("%s: events %s, want %s", id, got, want)
		}
		if got := get(t, s, id).GetLastSeq(); got != batches*size {
			t.Errorf("%s: LastSeq %d, want %d", id, got, batches*size)
		}
	}
}

// Of several claims of one key at once, exactly one wins, and every other
// gets the winner's claim back.
func testConcurrentClaims(t *testing.T, s history.Store) {
	const claimers, keys = 8, 5
	type result struct {
		claim history.RequestClaim
		won   bool
	}
	results := make([][]result, keys)
	for k := range results {
		results[k] = make([]result, claimers)
	}
	var wg sync.WaitGroup
	for c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				key := history.RequestKey{Tenant: "t", RequestID: fmt.Sprintf("req-%d", k)}
				mine := history.RequestClaim{BuildID: fmt.Sprintf("b%d-%d", k, c), Fingerprint: fmt.Sprint(c)}
				got, won, err := s.ClaimRequest(context.Background(), key, mine)
				if err != nil {
					t.Errorf("ClaimRequest: %v", err)
					return
				}
				if won && got != mine {
					t.Errorf("a won claim returned %+v, want its own %+v", got, mine)
				}
				results[k][c] = result{got, won}
			}
		}()
	}
	wg.Wait()
	for k, rs := range results {
		var winners []history.RequestClaim
		for _, r := range rs {
			if r.won {
				winners = append(winners, r.claim)
			}
		}
		if len(winners) != 1 {
			t.Errorf("key %d: %d claims won, want exactly 1", k, len(winners))
			continue
		}
		for c, r := range rs {
			if r.claim != winners[0] {
				t.Errorf("key %d, claimer %d: got %+v, want the winner's %+v", k, c, r.claim, winners[0])
			}
		}
		key := history.RequestKey{Tenant: "t", RequestID: fmt.Sprintf("req-%d", k)}
		if c, err := s.LookupRequest(context.Background(), key); err != nil || c != winners[0] {
			t.Errorf("key %d: lookup %+v %v, want the winner's %+v", k, c, err, winners[0])
		}
	}
}
