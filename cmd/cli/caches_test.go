package main

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestCacheUsageLine(t *testing.T) {
	for _, tt := range []struct {
		name string
		u    *buildv1.CacheUsage
		want string
	}{
		{"none", nil, ""},
		{"both", &buildv1.CacheUsage{ModuleHits: 3, ModuleBytesCached: 2048, ModuleFetchTime: durationpb.New(0),
			BuildCacheHits: 340, BuildCacheMisses: 3, BuildCachePuts: 5, BuildCacheBytesRead: 3 << 20, BuildCacheBytesWritten: 1024,
			BuildCacheTime: durationpb.New(0)},
			"modules: 3 from the proxy's cache (2KiB), 0 fetched; build cache: 340 hits, 3 misses, 5 puts (3MiB read, 1KiB written)"},
		{"fetched", &buildv1.CacheUsage{ModuleHits: 1, ModuleMisses: 2, ModuleBytesFetched: 4096, ModuleFetchTime: durationpb.New(1500e6)},
			"modules: 1 from the proxy's cache (0B), 2 fetched (4KiB in 1.5s)"},
		{"store only", &buildv1.CacheUsage{BuildCacheMisses: 7, BuildCacheTime: durationpb.New(0)},
			"build cache: 0 hits, 7 misses, 0 puts (0B read, 0B written)"},
	} {
		if got := cacheUsageLine(tt.u); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}
