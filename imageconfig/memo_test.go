package imageconfig

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// fakeRegistry answers config lookups for one tag, which can be moved to
// another digest, and counts them.
type fakeRegistry struct {
	digest string
	calls  int
	err    error
}

func (r *fakeRegistry) fetch(ref string) func(context.Context) (Config, error) {
	return func(context.Context) (Config, error) {
		r.calls++
		if r.err != nil {
			return Config{}, r.err
		}
		return Config{Ref: ref + "@" + r.digest, JSON: []byte(`{"digest":"` + r.digest + `"}`)}, nil
	}
}

// A tag's config is remembered for the TTL: a tag moved to a new digest is
// picked up once the TTL has passed, not before; a digest is remembered
// past any TTL; errors are not remembered; scopes and platforms are apart.
func TestTagMovesAfterTTL(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m := New(WithTTL(30*time.Second), WithClock(func() time.Time { return now }))
	ctx := context.Background()
	reg := &fakeRegistry{digest: "sha256:1111"}
	tag := Key{Scope: "team-a", Ref: "reg.example/base:1", Platform: "linux/amd64"}

	get := func(k Key) Config {
		t.Helper()
		cfg, err := m.Resolve(ctx, k, reg.fetch(k.Ref))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if got := get(tag); got.Ref != "reg.example/base:1@sha256:1111" || reg.calls != 1 {
		t.Fatalf("first lookup = %v after %d calls", got, reg.calls)
	}
	reg.digest = "sha256:2222" // the tag is pushed anew
	now = now.Add(29 * time.Second)
	if got := get(tag); got.Ref != "reg.example/base:1@sha256:1111" || reg.calls != 1 {
		t.Fatalf("within the TTL = %v after %d calls, want the remembered answer", got, reg.calls)
	}
	now = now.Add(time.Second)
	if got := get(tag); got.Ref != "reg.example/base:1@sha256:2222" || reg.calls != 2 {
		t.Fatalf("after the TTL = %v after %d calls, want the new digest", got, reg.calls)
	}

	pinned := Key{Scope: "team-a", Ref: "reg.example/base:1@sha256:2222", Platform: "linux/amd64"}
	get(pinned)
	now = now.Add(24 * time.Hour)
	calls := reg.calls
	get(pinned)
	if reg.calls != calls {
		t.Errorf("a digest was asked again after a day")
	}

	for _, other := range []Key{{Scope: "team-b", Ref: tag.Ref, Platform: tag.Platform}, {Scope: tag.Scope, Ref: tag.Ref, Platform: "linux/arm64"}} {
		calls := reg.calls
		get(other)
		if reg.calls != calls+1 {
			t.Errorf("%+v was answered from another key's entry", other)
		}
	}

	reg.err = errors.New("registry down")
	broken := Key{Scope: "team-a", Ref: "reg.example/other:1"}
	if _, err := m.Resolve(ctx, broken, reg.fetch(broken.Ref)); err == nil {
		t.Fatal("want the error")
	}
	reg.err = nil
	calls = reg.calls
	get(broken)
	if reg.calls != calls+1 {
		t.Error("an error was remembered")
	}
}

// The memo is bounded: the least recently used entry goes first; no TTL
// means tags are not remembered.
func TestBoundsAndNoTTL(t *testing.T) {
	m := New(WithMaxEntries(2))
	ctx := context.Background()
	reg := &fakeRegistry{digest: "sha256:1"}
	keys := make([]Key, 3)
	for i := range keys {
		keys[i] = Key{Ref: fmt.Sprintf("reg.example/img:%d@sha256:%d", i, i)}
	}
	for _, k := range keys[:2] {
		m.Resolve(ctx, k, reg.fetch(k.Ref))
	}
	m.Resolve(ctx, keys[0], reg.fetch(keys[0].Ref)) // keys[0] now most recent
	m.Resolve(ctx, keys[2], reg.fetch(keys[2].Ref)) // evicts keys[1]
	if m.Len() != 2 {
		t.Fatalf("len = %d, want 2", m.Len())
	}
	calls := reg.calls
	m.Resolve(ctx, keys[0], reg.fetch(keys[0].Ref))
	if reg.calls != calls {
		t.Error("the most recently used entry was evicted")
	}
	m.Resolve(ctx, keys[1], reg.fetch(keys[1].Ref))
	if reg.calls != calls+1 {
		t.Error("the least recently used entry was kept")
	}

	none := New(WithTTL(0))
	tag := Key{Ref: "reg.example/img:latest"}
	none.Resolve(ctx, tag, reg.fetch(tag.Ref))
	calls = reg.calls
	none.Resolve(ctx, tag, reg.fetch(tag.Ref))
	if reg.calls != calls+1 {
		t.Error("a tag was remembered with no TTL")
	}
}
