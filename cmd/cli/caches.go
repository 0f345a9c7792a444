package main

import (
	"fmt"
	"strings"

	"github.com/docker/go-units"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// cacheUsageLine says what a build took from the service's caches:
//
//	modules: 3 from the proxy's cache (31.3KiB), 0 fetched; build cache: 340 hits, 3 misses, 5 puts (49.3MiB read, 24.7KiB written)
//
// The parts the server does not run (no proxy, no store) are left out; ""
// for none.
func cacheUsageLine(u *buildv1.CacheUsage) string {
	if u == nil {
		return ""
	}
	var parts []string
	if u.GetModuleHits()+u.GetModuleMisses() > 0 || u.GetModuleFetchTime() != nil {
		p := fmt.Sprintf("modules: %d from the proxy's cache (%s), %d fetched", u.GetModuleHits(),
			units.BytesSize(float64(u.GetModuleBytesCached())), u.GetModuleMisses())
		if u.GetModuleMisses() > 0 {
			p += fmt.Sprintf(" (%s in %s)", units.BytesSize(float64(u.GetModuleBytesFetched())), u.GetModuleFetchTime().AsDuration().Round(1e6))
		}
		parts = append(parts, p)
	}
	if u.GetBuildCacheHits()+u.GetBuildCacheMisses()+u.GetBuildCachePuts() > 0 || u.GetBuildCacheTime() != nil {
		parts = append(parts, fmt.Sprintf("build cache: %d hits, %d misses, %d puts (%s read, %s written)",
			u.GetBuildCacheHits(), u.GetBuildCacheMisses(), u.GetBuildCachePuts(),
			units.BytesSize(float64(u.GetBuildCacheBytesRead())), units.BytesSize(float64(u.GetBuildCacheBytesWritten()))))
	}
	return strings.Join(parts, "; ")
}
