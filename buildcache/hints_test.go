package buildcache

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestHints: a Handler with a key keeps one hint list for it, in its
// scope: another key or scope sees none, a Handler without a key answers
// 404 both ways, and a list of broken ids is refused.
func TestHints(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := serve(t, st, "tenant-a", nil, WithHints("repo\x00.\x00."))
	ids := [][]byte{actionID("x"), actionID("y")}
	if _, err := a.Hints(ctx); !errors.Is(err, ErrNotFound) {
		t.Errorf("hints before any: %v, want not found", err)
	}
	if err := a.PutHints(ctx, ids); err != nil {
		t.Fatal(err)
	}
	got, err := a.Hints(ctx)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], ids[0]) || !bytes.Equal(got[1], ids[1]) {
		t.Fatalf("hints = %x, %v; want %x", got, err, ids)
	}
	for name, c := range map[string]*Client{
		"another key":   serve(t, st, "tenant-a", nil, WithHints("other\x00.\x00.")),
		"another scope": serve(t, st, "tenant-b", nil, WithHints("repo\x00.\x00.")),
		"no key":        serve(t, st, "tenant-a", nil),
	} {
		if got, err := c.Hints(ctx); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: hints %x, %v; want not found", name, got, err)
		}
	}
	if err := serve(t, st, "tenant-a", nil).PutHints(ctx, ids); !errors.Is(err, ErrNotFound) {
		t.Errorf("put without a key: %v, want not found", err)
	}
	if err := a.PutHints(ctx, [][]byte{[]byte("short")}); err == nil {
		t.Error("a hint of the wrong size was sent")
	}
}
