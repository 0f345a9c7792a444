package server

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestPruneHistory(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	// b1..b6, oldest first; b6 is still running (and active in memory).
	builds := []struct {
		id       string
		state    buildv1.BuildState
		finished time.Duration // ago; 0 = not finished
	}{
		{"b1", buildv1.BuildState_BUILD_STATE_SUCCEEDED, 10 * day},
		{"b2", buildv1.BuildState_BUILD_STATE_FAILED, 8 * day},
		{"b3", buildv1.BuildState_BUILD_STATE_CANCELLED, 3 * day},
		{"b4", buildv1.BuildState_BUILD_STATE_SUCCEEDED, 2 * day},
		{"b5", buildv1.BuildState_BUILD_STATE_SUCCEEDED, time.Hour},
		{"b6", buildv1.BuildState_BUILD_STATE_BUILDING, 0},
	}
	tests := []struct {
		name   string
		policy CleanupPolicy
		want   string // ids left
	}{
		{"nothing configured", CleanupPolicy{}, "[b1 b2 b3 b4 b5 b6]"},
		{"by age", CleanupPolicy{HistoryMaxAge: 7 * day}, "[b3 b4 b5 b6]"},
		{"by count", CleanupPolicy{HistoryMaxBuilds: 2}, "[b4 b5 b6]"},
		{"both", CleanupPolicy{HistoryMaxAge: 2*day + time.Hour, HistoryMaxBuilds: 3}, "[b4 b5 b6]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			s := &Server{cfg: Config{Store: store}, active: map[string]*build{"b6": {id: "b6"}}}
			for _, b := range builds {
				info := &buildv1.BuildInfo{BuildId: b.id, State: b.state}
				if b.finished > 0 {
					info.EndTime = timestamp(now.Add(-b.finished))
				}
				if err := store.PutBuild(ctx, info); err != nil {
					t.Fatal(err)
				}
			}
			n, err := s.pruneHistory(ctx, tt.policy, now)
			if err != nil {
				t.Fatal(err)
			}
			left, _, err := store.List(ctx, history.Filter{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, b := range left {
				ids = append(ids, b.GetBuildId())
			}
			sort.Strings(ids)
			if fmt.Sprint(ids) != tt.want || int(n) != len(builds)-len(ids) {
				t.Errorf("left %v (deleted %d), want %s", ids, n, tt.want)
			}
		})
	}
}
