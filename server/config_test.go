package server

import (
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/history"
)

// nopStore is enough of a store for config checks.
type nopStore struct{ history.Store }

func TestCacheNamespace(t *testing.T) {
	tests := []struct {
		ns              string
		ok              bool
		wantMod, wantGo string
	}{
		{"", true, "", ""}, // llb's defaults
		{"team-a_1.x", true, "buildsvc-gomodcache-team-a_1.x", "buildsvc-gocache-team-a_1.x"},
		{"a/b", false, "", ""},
		{"a b", false, "", ""},
		{"é", false, "", ""},
		{strings.Repeat("a", 64), true, "buildsvc-gomodcache-" + strings.Repeat("a", 64), "buildsvc-gocache-" + strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), false, "", ""},
	}
	for _, tt := range tests {
		c, err := Config{Store: nopStore{}, BuildKit: buildkitd.Endpoint{Address: "unix:///run/buildkitd.sock"}, CacheNamespace: tt.ns}.withDefaults()
		if (err == nil) != tt.ok {
			t.Errorf("namespace %q: err = %v, want ok %v", tt.ns, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if mod, build := c.cacheIDs(); mod != tt.wantMod || build != tt.wantGo {
			t.Errorf("namespace %q: ids %q, %q; want %q, %q", tt.ns, mod, build, tt.wantMod, tt.wantGo)
		}
	}
}
