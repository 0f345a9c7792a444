// Package imageconfig remembers the image configs a build resolves (the
// builder's and the base image's), so that each is asked of the registry
// once per digest, not once per build.
//
// A reference pinned by digest names one config forever: it is kept until
// the memo is full. A tag may move: its answer is kept for a short TTL, so
// a base image pushed anew is picked up within it. Entries are scoped (the
// server uses the tenant): a config fetched with one tenant's registry
// credentials is never handed to another tenant's build.
package imageconfig

import (
	"container/list"
	"context"
	"strings"
	"sync"
	"time"
)

// DefaultTTL is how long a tag's config is remembered.
const DefaultTTL = 30 * time.Second

// DefaultMaxEntries bounds the memo.
const DefaultMaxEntries = 1024

// Key names one lookup.
type Key struct {
	// Scope keeps lookups apart: the tenant whose credentials fetched it.
	Scope string
	// Ref is the image reference as asked, a tag or a digest.
	Ref string
	// Platform is the platform asked for, as os/arch[/variant].
	Platform string
}

// Config is an image config as the registry gave it.
type Config struct {
	// Ref is the reference pinned to the digest the registry named.
	Ref string
	// JSON is the image's config.
	JSON []byte
}

// Memo remembers image configs. Its zero value is not usable: use New.
type Memo struct {
	ttl  time.Duration
	max  int
	now  func() time.Time
	mu   sync.Mutex
	byID map[Key]*list.Element
	lru  *list.List // of *entry, most recent first
}

type entry struct {
	key     Key
	cfg     Config
	expires time.Time // zero: never (a digest)
}

// Option configures a Memo.
type Option func(*Memo)

// WithTTL sets how long a tag's config is remembered; 0 or less means
// tags are not remembered at all.
func WithTTL(d time.Duration) Option { return func(m *Memo) { m.ttl = d } }

// WithMaxEntries bounds the memo; the least recently used entry goes first.
func WithMaxEntries(n int) Option { return func(m *Memo) { m.max = n } }

// WithClock sets the memo's clock (for tests).
func WithClock(now func() time.Time) Option { return func(m *Memo) { m.now = now } }

// New returns an empty memo.
func New(opts ...Option) *Memo {
	m := &Memo{ttl: DefaultTTL, max: DefaultMaxEntries, now: time.Now, byID: map[Key]*list.Element{}, lru: list.New()}
	for _, o := range opts {
		o(m)
	}
	if m.max < 1 {
		m.max = 1
	}
	return m
}

// IsDigest reports whether ref is pinned by digest.
func IsDigest(ref string) bool {
	return strings.Contains(ref, "@sha256:") || strings.Contains(ref, "@sha512:")
}

// Resolve returns key's config, from the memo when it holds a live answer,
// else from fetch, whose answer is remembered (an error is not).
func (m *Memo) Resolve(ctx context.Context, key Key, fetch func(context.Context) (Config, error)) (Config, error) {
	if cfg, ok := m.lookup(key); ok {
		return cfg, nil
	}
	cfg, err := fetch(ctx)
	if err != nil {
		return Config{}, err
	}
	m.store(key, cfg)
	return cfg, nil
}

func (m *Memo) lookup(key Key) (Config, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byID[key]
	if !ok {
		return Config{}, false
	}
	e := el.Value.(*entry)
	if !e.expires.IsZero() && !m.now().Before(e.expires) {
		m.lru.Remove(el)
		delete(m.byID, key)
		return Config{}, false
	}
	m.lru.MoveToFront(el)
	return e.cfg, true
}

func (m *Memo) store(key Key, cfg Config) {
	var expires time.Time
	if !IsDigest(key.Ref) {
		if m.ttl <= 0 {
			return
		}
		expires = m.now().Add(m.ttl)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byID[key]; ok {
		el.Value = &entry{key: key, cfg: cfg, expires: expires}
		m.lru.MoveToFront(el)
		return
	}
	m.byID[key] = m.lru.PushFront(&entry{key: key, cfg: cfg, expires: expires})
	for m.lru.Len() > m.max {
		last := m.lru.Back()
		m.lru.Remove(last)
		delete(m.byID, last.Value.(*entry).key)
	}
}

// Len is how many configs the memo holds (some may have expired).
func (m *Memo) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}
