package server

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/moby/buildkit/client"
	"golang.org/x/sync/errgroup"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// CleanupPolicy says what the periodic cleanup keeps.
type CleanupPolicy struct {
	// Interval between cleanup runs; 0 turns the periodic run off (the
	// Admin.Cleanup call still works).
	Interval time.Duration
	// KeepDuration keeps BuildKit cache records used within this long. The
	// shared Go module and build caches are only ever pruned by age: they
	// survive every run while they are younger than this.
	KeepDuration time.Duration
	// KeepStorage is the most bytes BuildKit's other cache may keep; 0
	// keeps none of what is older than KeepDuration.
	KeepStorage int64
	// HistoryMaxAge removes ended builds that finished longer ago; 0 keeps
	// them whatever their age.
	HistoryMaxAge time.Duration
	// HistoryMaxBuilds keeps at most this many ended builds, the newest;
	// 0 means no limit.
	HistoryMaxBuilds int
}

// cacheMountFilter selects the BuildKit records of cache mounts.
const cacheMountFilter = "type==" + string(client.UsageRecordTypeCacheMount)

// cleanupObserver is implemented by observers (metrics) that want to hear
// about cleanup runs.
type cleanupObserver interface {
	CleanupRan(buildkitBytes, historyBuilds, tempBytes int64)
}

// storeCleanupObserver is implemented by observers (metrics) that want to
// hear what the stores' cleanups freed, and the build-cache store's size
// after it.
type storeCleanupObserver interface {
	StoresCleaned(moduleProxyBytes, buildCacheBytes int64)
	BuildCacheStoreSize(bytes int64)
}

// StoreCleaner cleans one of the service's stores by its limits and
// returns the bytes it freed and the bytes the store holds after it.
type StoreCleaner func(ctx context.Context) (freed, size int64, err error)

// Cleanup implements buildv1.AdminServiceServer: it runs one cleanup now.
func (s *Server) Cleanup(ctx context.Context, _ *buildv1.CleanupRequest) (*buildv1.CleanupResponse, error) {
	// The authenticator lets only admins call Admin methods; this is the
	// same rule, held where the method is.
	if c, err := s.callerOf(ctx); err != nil || !c.admin {
		return nil, toStatus(cmp.Or(err, errNotAdmin))
	}
	resp, err := s.RunCleanup(ctx)
	return resp, toStatus(err)
}

// RunCleanup prunes BuildKit's cache and the build history by the
// configured policy, cleans the module proxy and the build-cache store by
// their limits, logs what it freed and tells the observer. The server
// writes no temporary files of its own (sources and outputs stay inside
// BuildKit), so there are none to remove.
func (s *Server) RunCleanup(ctx context.Context) (*buildv1.CleanupResponse, error) {
	began := time.Now()
	p := s.cfg.Cleanup
	resp := &buildv1.CleanupResponse{}
	bytes, records, err := s.prune(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("buildkit prune: %w", err)
	}
	resp.BuildkitBytesFreed, resp.BuildkitRecordsPruned = bytes, records
	if resp.BuildsDeleted, err = s.pruneHistory(ctx, p, began); err != nil {
		return nil, fmt.Errorf("history retention: %w", err)
	}
	cacheSize := int64(-1)
	for _, st := range []struct {
		clean       StoreCleaner
		freed, size *int64
		name        string
	}{
		{s.cfg.CleanModuleProxy, &resp.ModuleProxyBytesFreed, new(int64), "module proxy"},
		{s.cfg.CleanBuildCache, &resp.BuildCacheBytesFreed, &cacheSize, "build-cache store"},
	} {
		if st.clean == nil {
			continue
		}
		// A store that fails to clean is logged; the others still run.
		n, size, err := st.clean(ctx)
		if err != nil {
			s.cfg.Logger.Warn("cleanup of the "+st.name, "err", err)
			size = -1
		}
		*st.freed, *st.size = n, size
	}
	resp.Seconds = time.Since(began).Seconds()
	s.cfg.Logger.Info("cleanup ran", "buildkit_bytes_freed", resp.BuildkitBytesFreed,
		"buildkit_records_pruned", resp.BuildkitRecordsPruned, "builds_deleted", resp.BuildsDeleted,
		"module_proxy_bytes_freed", resp.ModuleProxyBytesFreed, "build_cache_bytes_freed", resp.BuildCacheBytesFreed,
		"seconds", resp.Seconds)
	if o, ok := s.cfg.Observer.(cleanupObserver); ok {
		o.CleanupRan(resp.BuildkitBytesFreed, resp.BuildsDeleted, resp.TempBytesFreed)
	}
	if o, ok := s.cfg.Observer.(storeCleanupObserver); ok {
		o.StoresCleaned(resp.ModuleProxyBytesFreed, resp.BuildCacheBytesFreed)
		if cacheSize >= 0 {
			o.BuildCacheStoreSize(cacheSize)
		}
	}
	return resp, nil
}

// RunCleanupEvery runs the cleanup at the policy's interval until ctx ends.
// A failed run is logged and the next one comes at the next tick.
func (s *Server) RunCleanupEvery(ctx context.Context) {
	if s.cfg.Cleanup.Interval <= 0 {
		return
	}
	t := time.NewTicker(s.cfg.Cleanup.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.RunCleanup(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Error("cleanup failed", "err", err)
			}
		}
	}
}

// prune prunes the server's buildkitd, or every healthy worker of its
// pool.
func (s *Server) prune(ctx context.Context, p CleanupPolicy) (bytes, records int64, err error) {
	e, ok := s.cfg.Builders.(interface {
		eachBuilder(ctx context.Context, fn func(ctx context.Context, name string, c BuildKitClient) error) error
	})
	if !ok {
		return pruneOne(ctx, s.bk, p)
	}
	err = e.eachBuilder(ctx, func(ctx context.Context, _ string, c BuildKitClient) error {
		b, r, err := pruneOne(ctx, c, p)
		bytes, records = bytes+b, records+r
		return err
	})
	return bytes, records, err
}

// pruneOne runs two BuildKit prunes on bk: everything but the cache mounts
// by age and size, then the cache mounts by age alone.
func pruneOne(ctx context.Context, bk BuildKitClient, p CleanupPolicy) (bytes, records int64, err error) {
	runs := [][]client.PruneOption{
		{client.WithKeepOpt(p.KeepDuration, 0, p.KeepStorage, 0), client.WithFilter([]string{"type!=" + string(client.UsageRecordTypeCacheMount)})},
		{client.WithKeepOpt(p.KeepDuration, 0, 0, 0), client.WithFilter([]string{cacheMountFilter})},
	}
	for _, opts := range runs {
		ch := make(chan client.UsageInfo)
		eg, ectx := errgroup.WithContext(ctx)
		eg.Go(func() error {
			for u := range ch {
				bytes += u.Size
				records++
			}
			return nil
		})
		eg.Go(func() error {
			defer close(ch)
			return bk.Prune(ectx, ch, opts...)
		})
		if err := eg.Wait(); err != nil {
			return bytes, records, err
		}
	}
	return bytes, records, nil
}

// pruneHistory deletes ended builds past the age or count limit. Builds
// that are queued or running are never deleted.
func (s *Server) pruneHistory(ctx context.Context, p CleanupPolicy, now time.Time) (int64, error) {
	if p.HistoryMaxAge <= 0 && p.HistoryMaxBuilds <= 0 {
		return 0, nil
	}
	f := history.Filter{Limit: 500, AnyTenant: true, States: []buildv1.BuildState{
		buildv1.BuildState_BUILD_STATE_SUCCEEDED, buildv1.BuildState_BUILD_STATE_FAILED,
		buildv1.BuildState_BUILD_STATE_CANCELLED, buildv1.BuildState_BUILD_STATE_INTERRUPTED,
	}}
	var doomed []string
	kept := 0
	for {
		page, more, err := s.cfg.Store.List(ctx, f)
		if err != nil {
			return 0, err
		}
		for _, b := range page {
			tooOld := p.HistoryMaxAge > 0 && b.GetEndTime() != nil && now.Sub(b.GetEndTime().AsTime()) > p.HistoryMaxAge
			tooMany := p.HistoryMaxBuilds > 0 && kept >= p.HistoryMaxBuilds
			if (tooOld || tooMany) && s.activeBuild(b.GetBuildId()) == nil {
				doomed = append(doomed, b.GetBuildId())
				continue
			}
			kept++
		}
		if !more {
			break
		}
		f.Before = page[len(page)-1].GetBuildId()
	}
	if len(doomed) == 0 {
		return 0, nil
	}
	return int64(len(doomed)), s.cfg.Store.Delete(ctx, doomed...)
}
