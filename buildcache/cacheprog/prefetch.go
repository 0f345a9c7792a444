package cacheprog

import (
	"context"
	"errors"
	"sync"

	"github.com/buildsvc/buildsvc/buildcache"
)

// Hinter is a Remote that keeps hint lists (buildcache.Client does): the
// action ids the last build of the same program used. The helper fetches
// them ahead when it starts and sends its own when it closes.
type Hinter interface {
	Hints(ctx context.Context) ([][]byte, error)
	PutHints(ctx context.Context, ids [][]byte) error
}

var _ Hinter = (*buildcache.Client)(nil)

// prefetchWorkers fetch hinted entries at once: more than the go command
// asks at a time on a small builder, few enough not to crowd it out.
const prefetchWorkers = 8

// usedIDs are the action ids the go command used in this run: its hits
// and its puts, in first-use order, at most buildcache.MaxHints.
type usedIDs struct {
	mu   sync.Mutex
	seen map[[buildcache.IDSize]byte]bool
	ids  [][]byte
}

func (u *usedIDs) add(id []byte) {
	if !validID(id) {
		return
	}
	k := [buildcache.IDSize]byte(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen = map[[buildcache.IDSize]byte]bool{}
	}
	if u.seen[k] || len(u.ids) >= buildcache.MaxHints {
		return
	}
	u.seen[k] = true
	u.ids = append(u.ids, append([]byte(nil), id...))
}

func (u *usedIDs) list() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ids
}

// fetchOnce is fetch, once at a time per action id: a get of an entry the
// prefetch is fetching waits for it rather than fetching it again.
func (h *Helper) fetchOnce(ctx context.Context, actionID []byte) (buildcache.Entry, string, bool) {
	k := string(actionID)
	h.inflightMu.Lock()
	if h.inflight == nil {
		h.inflight = map[string]chan struct{}{}
	}
	if ch, ok := h.inflight[k]; ok {
		h.inflightMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return buildcache.Entry{}, "", false
		}
		return h.local(actionID)
	}
	ch := make(chan struct{})
	h.inflight[k] = ch
	h.inflightMu.Unlock()
	defer func() {
		h.inflightMu.Lock()
		delete(h.inflight, k)
		h.inflightMu.Unlock()
		close(ch)
	}()
	return h.fetch(ctx, actionID)
}

// prefetch fetches the hinted entries the local directory lacks, until
// ctx ends. Hints are advice: a failure to read them is no failure of the
// store's.
func (h *Helper) prefetch(ctx context.Context, hr Hinter) {
	ids, err := hr.Hints(ctx)
	if err != nil {
		if !errors.Is(err, buildcache.ErrNotFound) && ctx.Err() == nil {
			var se *buildcache.StatusError
			if !errors.As(err, &se) {
				h.remoteFailed(err)
			}
		}
		return
	}
	work := make(chan []byte)
	var wg sync.WaitGroup
	for range min(prefetchWorkers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if !h.useRemote() {
					continue
				}
				if _, _, ok := h.local(id); ok {
					continue
				}
				if _, _, ok := h.fetchOnce(ctx, id); ok {
					h.prefetched.Add(1)
				}
			}
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
			return
		}
	}
}

// sendHints sends the ids this run used as the program's hints.
func (h *Helper) sendHints(ctx context.Context, hr Hinter) {
	ids := h.used.list()
	if len(ids) == 0 || !h.useRemote() {
		return
	}
	// A store without hints for this program (404) is no failure.
	if err := hr.PutHints(ctx, ids); err != nil && ctx.Err() == nil && !errors.Is(err, buildcache.ErrNotFound) {
		var se *buildcache.StatusError
		if !errors.As(err, &se) {
			h.remoteFailed(err)
		}
	}
}
