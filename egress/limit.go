package egress

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// Limiter bounds how many lookups run at once, in all and per key (a
// tenant). A lookup first waits for its key's share, then for a slot of
// the whole, so one key's waiting lookups never hold more than its share
// of the whole.
type Limiter struct {
	total    *semaphore.Weighted
	perKey   int64
	mu       sync.Mutex
	keys     map[string]*keySem
	max, per int
}

type keySem struct {
	sem   *semaphore.Weighted
	users int // holding or waiting
}

// NewLimiter returns a limiter of total lookups at once, perKey of them for
// one key. Values below 1 are taken as 1; perKey is at most total.
func NewLimiter(total, perKey int) *Limiter {
	total = max(total, 1)
	perKey = min(max(perKey, 1), total)
	return &Limiter{total: semaphore.NewWeighted(int64(total)), perKey: int64(perKey),
		keys: map[string]*keySem{}, max: total, per: perKey}
}

// Limits returns the limiter's limits: in all and per key.
func (l *Limiter) Limits() (total, perKey int) { return l.max, l.per }

// Acquire waits until key may run one more lookup, or ctx ends (then it
// returns ctx's error). release must be called once the lookup ends.
func (l *Limiter) Acquire(ctx context.Context, key string) (release func(), err error) {
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		k = &keySem{sem: semaphore.NewWeighted(l.perKey)}
		l.keys[key] = k
	}
	k.users++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if k.users--; k.users == 0 {
			delete(l.keys, key)
		}
		l.mu.Unlock()
	}
	if err := k.sem.Acquire(ctx, 1); err != nil {
		done()
		return nil, err
	}
	if err := l.total.Acquire(ctx, 1); err != nil {
		k.sem.Release(1)
		done()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.total.Release(1)
			k.sem.Release(1)
			done()
		})
	}, nil
}
