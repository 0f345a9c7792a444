package modproxy

import (
	"context"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestClean evicts by age and, least recently used first, by size; a hit is a use.
func TestClean(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	// Three 100-byte entries last used 3h, 2h and 1h ago.
	entries := []struct {
		name string
		age  time.Duration
	}{
		{"x.test/old/@v/v1.0.0.mod", 3 * time.Hour},
		{"x.test/mid/@v/v1.0.0.mod", 2 * time.Hour},
		{"x.test/new/@v/v1.0.0.mod", 1 * time.Hour},
	}
	tests := []struct {
		name     string
		maxBytes int64
		maxAge   time.Duration
		hit      string // entry fetched through the handler before cleaning
		want     []string
	}{
		{"no limits", 0, 0, "", []string{"mid", "new", "old"}},
		{"size evicts least recently used", 250, 0, "", []string{"mid", "new"}},
		{"size after a hit on the oldest", 250, 0, "old", []string{"new", "old"}},
		{"size keeps evicting", 150, 0, "", []string{"new"}},
		{"age", 0, 90 * time.Minute, "", []string{"new"}},
		{"age after a hit", 0, 90 * time.Minute, "mid", []string{"mid", "new"}},
		{"age and size", 50, 150 * time.Minute, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serve(t, WithUpstream("off"), WithGoSumDB("off"), WithLimits(tt.maxBytes, tt.maxAge), withClock(func() time.Time { return now }))
			for _, e := range entries {
				file, err := s.file("default", e.name)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				data := "module " + strings.TrimSuffix(e.name, "/@v/v1.0.0.mod") + "\n"
				data += strings.Repeat("/", 100-len(data))
				if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(file, now.Add(-e.age), now.Add(-e.age)); err != nil {
					t.Fatal(err)
				}
			}
			// Leftover temporary files: a stale one goes, a fresh one (a write in
			// progress) stays; neither counts as an entry.
			temps := map[string]bool{}
			for _, tmp := range []struct {
				file  string
				stale bool
			}{
				{filepath.Join(s.scopeDir, "default", "x.test", "old", "@v", ".v1.0.0.zip.tmp.1"), true},
				{filepath.Join(s.scopeDir, "default", "x.test", "wip", "@v", ".v1.0.0.zip.tmp.2"), false},
				{filepath.Join(s.tmpDir, "goproxy.tmp.1"), true},
			} {
				if err := os.MkdirAll(filepath.Dir(tmp.file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(tmp.file, []byte("partial"), 0o644); err != nil {
					t.Fatal(err)
				}
				if tmp.stale {
					old := now.Add(-2 * staleTemp)
					if err := os.Chtimes(tmp.file, old, old); err != nil {
						t.Fatal(err)
					}
				}
				temps[tmp.file] = tmp.stale
			}
			defer func() {
				for file, stale := range temps {
					if _, err := os.Stat(file); (err == nil) == stale {
						t.Errorf("temporary %s (stale %v): stat %v", filepath.Base(file), stale, err)
					}
				}
			}()
			if _, _, err := s.DiskUsage(); err != nil {
				t.Fatal(err)
			}
			if tt.hit != "" {
				user, pass := s.Credentials("default", "c")
				if code, _, body := s.get(t, "/default/x.test/"+tt.hit+"/@v/v1.0.0.mod", user, pass); code != http.StatusOK {
					t.Fatalf("hit: %d %s", code, body)
				}
			}

			res, err := s.Clean(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			filepath.WalkDir(s.scopeDir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !isTemp(d.Name()) {
					left = append(left, strings.Split(strings.TrimPrefix(p, s.scopeDir+"/default/x.test/"), "/")[0])
				}
				return nil
			})
			slices.Sort(left)
			if !slices.Equal(left, tt.want) {
				t.Errorf("left %v, want %v", left, tt.want)
			}
			if res.Entries != len(tt.want) || res.Removed != 3-len(tt.want) || res.Bytes != int64(100*len(tt.want)) || res.RemovedBytes != int64(100*res.Removed) {
				t.Errorf("result %+v for %d entries left", res, len(tt.want))
			}
			if got := testutil.ToFloat64(s.metrics.cacheBytes); int64(got) != res.Bytes {
				t.Errorf("cache_bytes %v, want %d", got, res.Bytes)
			}
			// Evicted modules leave no empty directories behind.
			for _, m := range []string{"old", "mid", "new"} {
				_, err := os.Stat(filepath.Join(s.scopeDir, "default", "x.test", m))
				if exists := err == nil; exists != slices.Contains(tt.want, m) {
					t.Errorf("directory of %s exists = %v", m, exists)
				}
			}
		})
	}
}

// TestConcurrentDownloadsFetchOnce: parallel requests for one version in one scope reach
// upstream once; the others wait and are served from the cache.
func TestConcurrentDownloadsFetchOnce(t *testing.T) {
	a := makeModule(t, "example.test/Upper", "v1.0.0", "a") // escaped in the cache as !upper
	up := newUpstream(t, a)
	const n = 8
	var s *served
	// The first upstream request waits until every client request is inside the proxy,
	// so without the per-version lock they would all miss the cache.
	var once sync.Once
	inner := up.Config.Handler
	up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && s.waiting() < n {
				time.Sleep(time.Millisecond)
			}
		})
		inner.ServeHTTP(w, r)
	})
	s = serve(t, WithUpstream(up.URL), WithGoNoSumDB("example.test"))
	user, pass := s.Credentials("default", "c")

	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			ext := []string{".zip", ".mod", ".info"}[i%3]
			codes[i], _, _ = s.get(t, "/default/example.test/!upper/@v/v1.0.0"+ext, user, pass)
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d: status %d", i, c)
		}
	}
	if _, zips := up.requests(".zip"); zips != 1 {
		t.Errorf("upstream got %d zip requests, want 1", zips)
	}
	if st := s.BuildStats("c"); st.Misses != 1 || st.Hits != n-1 {
		t.Errorf("stats %+v, want 1 miss and %d hits", st, n-1)
	}
}

// waiting counts requests holding or waiting for a per-version lock.
func (s *served) waiting() int {
	s.locks.mu.Lock()
	defer s.locks.mu.Unlock()
	n := 0
	for _, k := range s.locks.m {
		n += k.refs
	}
	return n
}
