package history

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

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

func TestEventsSurviveReopen(t *testing.T) {
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
	s.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetBuild(ctx, "b1")
	if err != nil || got.GetState() != buildv1.BuildState_BUILD_STATE_BUILDING {
		t.Fatalf("GetBuild = %v, %v", got, err)
	}
	tests := []struct {
		after      uint64
		limit      int
		first, num uint64
	}{
		{after: 0, limit: 1000, first: 1, num: 310},
		{after: 305, limit: 1000, first: 306, num: 5},
		{after: 10, limit: 7, first: 11, num: 7},
		{after: 310, limit: 10, num: 0},
	}
	for _, tt := range tests {
		evs, err := s.Events(ctx, "b1", tt.after, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(evs)) != tt.num {
			t.Fatalf("Events(after %d, limit %d) = %d events, want %d", tt.after, tt.limit, len(evs), tt.num)
		}
		for i, e := range evs {
			if e.GetSeq() != tt.first+uint64(i) || string(e.GetLog().GetData()) != fmt.Sprint(e.GetSeq()) {
				t.Fatalf("event %d = seq %d %q", i, e.GetSeq(), e.GetLog().GetData())
			}
		}
	}
	if _, err := s.Events(ctx, "nope", 0, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("Events of unknown build: %v, want ErrNotFound", err)
	}
	if _, err := s.GetBuild(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetBuild of unknown build: %v, want ErrNotFound", err)
	}
}

func TestListFiltersAndPages(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	ok, failed := buildv1.BuildState_BUILD_STATE_SUCCEEDED, buildv1.BuildState_BUILD_STATE_FAILED
	for i := 1; i <= 9; i++ {
		state, repo := ok, "a"
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
		if err := s.PutBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(bs []*buildv1.BuildInfo) string {
		var out []string
		for _, b := range bs {
			out = append(out, b.GetBuildId())
		}
		return fmt.Sprint(out)
	}
	tests := []struct {
		name string
		f    Filter
		want string
		more bool
	}{
		{"newest first", Filter{Limit: 3, AnyTenant: true}, "[b9 b8 b7]", true},
		{"second page", Filter{Limit: 3, Before: "b7", AnyTenant: true}, "[b6 b5 b4]", true},
		{"last page", Filter{Limit: 3, Before: "b4", AnyTenant: true}, "[b3 b2 b1]", false},
		{"token past the end", Filter{Limit: 3, Before: "c", AnyTenant: true}, "[b9 b8 b7]", true},
		{"by state", Filter{Limit: 10, States: []buildv1.BuildState{failed}, AnyTenant: true}, "[b9 b6 b3]", false},
		{"by repo", Filter{Limit: 10, Repo: "b", AnyTenant: true}, "[b8 b6 b4 b2]", false},
		{"by both", Filter{Limit: 1, Repo: "b", States: []buildv1.BuildState{failed}, AnyTenant: true}, "[b6]", false},
		{"the empty tenant by default", Filter{Limit: 3}, "[b7 b6 b5]", true},
		{"by tenant", Filter{Limit: 10, Tenant: "other"}, "[b9 b8]", false},
		{"by tenant and repo", Filter{Limit: 10, Tenant: "other", Repo: "b"}, "[b8]", false},
		{"a tenant with none", Filter{Limit: 10, Tenant: "nobody"}, "[]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, more, err := s.List(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if ids(got) != tt.want || more != tt.more {
				t.Errorf("List = %s more=%v, want %s more=%v", ids(got), more, tt.want, tt.more)
			}
		})
	}
	if err := s.Delete(ctx, "b9", "b8"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.List(ctx, Filter{Limit: 2}); ids(got) != "[b7 b6]" {
		t.Errorf("after delete: %s", ids(got))
	}
	if _, _, err := s.List(ctx, Filter{}); err == nil {
		t.Error("List with no limit should fail")
	}
}
