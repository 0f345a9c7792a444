package history

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// orderStore is a store of builds b01 to b09: b03, b06 and b09 failed,
// the others succeeded; b02 and b04 are of repo "other", the rest of "r".
func orderStore(t *testing.T) *Bolt {
	t.Helper()
	s, _ := openTemp(t)
	for i := 1; i <= 9; i++ {
		state, repo := buildv1.BuildState_BUILD_STATE_SUCCEEDED, "r"
		if i%3 == 0 {
			state = buildv1.BuildState_BUILD_STATE_FAILED
		}
		if i == 2 || i == 4 {
			repo = "other"
		}
		if err := s.PutBuild(context.Background(), info(fmt.Sprintf("b%02d", i), repo, state)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// listIDs is the ids List returns for f, then " +" if it says more match.
func listIDs(t *testing.T, s *Bolt, f Filter) string {
	t.Helper()
	builds, more, err := s.List(context.Background(), f)
	if err != nil {
		t.Fatal(err)
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

func TestListOrderAndBounds(t *testing.T) {
	s := orderStore(t)
	failed := func(b *buildv1.BuildInfo) bool { return b.GetState() == buildv1.BuildState_BUILD_STATE_FAILED }
	odd := func(b *buildv1.BuildInfo) bool { return b.GetBuildId()[2]%2 == 1 }
	tests := []struct {
		name string
		f    Filter
		want string // the ids, then " +" when more match
	}{
		{"newest first", Filter{Limit: 3}, "b09 b08 b07 +"},
		{"newest first, all", Filter{Limit: 9}, "b09 b08 b07 b06 b05 b04 b03 b02 b01"},
		{"before", Filter{Before: "b05", Limit: 3}, "b04 b03 b02 +"},
		{"before, to the end", Filter{Before: "b03", Limit: 3}, "b02 b01"},
		{"before an id not stored", Filter{Before: "b05x", Limit: 2}, "b05 b04 +"},
		{"before every id", Filter{Before: "a", Limit: 2}, ""},
		{"before past every id", Filter{Before: "c", Limit: 2}, "b09 b08 +"},
		{"oldest first", Filter{Ascending: true, Limit: 3}, "b01 b02 b03 +"},
		{"oldest first, all", Filter{Ascending: true, Limit: 9}, "b01 b02 b03 b04 b05 b06 b07 b08 b09"},
		{"after", Filter{Ascending: true, After: "b05", Limit: 3}, "b06 b07 b08 +"},
		{"after, to the end", Filter{Ascending: true, After: "b07", Limit: 3}, "b08 b09"},
		{"after the last", Filter{Ascending: true, After: "b09", Limit: 3}, ""},
		{"after an id not stored", Filter{Ascending: true, After: "b05x", Limit: 2}, "b06 b07 +"},
		{"after before every id", Filter{Ascending: true, After: "a", Limit: 2}, "b01 b02 +"},
		{"between, oldest first", Filter{Ascending: true, After: "b02", Before: "b06", Limit: 9}, "b03 b04 b05"},
		{"between, newest first", Filter{After: "b02", Before: "b06", Limit: 9}, "b05 b04 b03"},
		{"between, no more past the bound", Filter{After: "b02", Before: "b06", Limit: 3}, "b05 b04 b03"},
		{"match", Filter{Match: failed, Limit: 9}, "b09 b06 b03"},
		{"match, oldest first, paged", Filter{Match: failed, Ascending: true, After: "b03", Limit: 1}, "b06 +"},
		{"match, last page", Filter{Match: failed, Ascending: true, After: "b06", Limit: 1}, "b09"},
		{"match and states and repo", Filter{Match: odd, States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_SUCCEEDED}, Repo: "r", Limit: 9}, "b07 b05 b01"},
		{"match keeps nothing", Filter{Match: func(*buildv1.BuildInfo) bool { return false }, Limit: 9}, ""},
	}
	for _, tt := range tests {
		if got := listIDs(t, s, tt.f); got != tt.want {
			t.Errorf("%s: List = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Paging with the last id as the cursor lists every build once, in order,
// both ways.
func TestListPagesBothWays(t *testing.T) {
	s := orderStore(t)
	for _, asc := range []bool{true, false} {
		f := Filter{Ascending: asc, Limit: 2}
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
