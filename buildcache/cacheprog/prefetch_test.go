package cacheprog

import (
	"context"
	"encoding/hex"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// hintingRemote is a fakeRemote that keeps a hint list.
type hintingRemote struct {
	*fakeRemote
	hmu   sync.Mutex
	hints [][]byte
	sent  [][]byte
}

func (r *hintingRemote) Hints(context.Context) ([][]byte, error) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	return r.hints, nil
}

func (r *hintingRemote) PutHints(_ context.Context, ids [][]byte) error {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	r.sent = ids
	return nil
}

func hexes(ids [][]byte) []string {
	var s []string
	for _, id := range ids {
		s = append(s, hex.EncodeToString(id))
	}
	return s
}

// TestPrefetch: the helper fetches the hinted entries into its local
// directory before the go command asks (a later get is a local hit), skips
// hints the store lacks, and sends the ids the go command used (its hits
// and puts, not what was only prefetched) as the next hints.
func TestPrefetch(t *testing.T) {
	fr := newFakeRemote()
	fr.add("a", "body a")
	fr.add("b", "body b")
	r := &hintingRemote{fakeRemote: fr, hints: [][]byte{id("a"), id("gone"), id("b")}}
	h, err := New(t.TempDir(), r)
	if err != nil {
		t.Fatal(err)
	}
	in, feed := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background(), in, io.Discard) }()
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().Prefetched < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("prefetched %d of the 2 hinted entries the store has", h.Stats().Prefetched)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := io.WriteString(feed, getLine(1, "a")+putLine(2, "c", "body c")+closeLine(3)); err != nil {
		t.Fatal(err)
	}
	feed.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := h.Stats()
	if st.LocalHits != 1 || st.RemoteHits != 0 {
		t.Errorf("the get of a prefetched entry: %+v, want a local hit", st)
	}
	// Gets are answered concurrently, so the order of a get and a put is
	// not fixed: the set is what counts.
	want := []string{hex.EncodeToString(id("a")), hex.EncodeToString(id("c"))}
	got := hexes(r.sent)
	slices.Sort(want)
	slices.Sort(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("hints sent %v, want the used ids %v", got, want)
	}
}

// TestNoHints: a store without hints for the program (404) is no failure:
// the helper keeps using it.
func TestNoHints(t *testing.T) {
	fr := newFakeRemote()
	fr.add("a", "body a")
	h, err := New(t.TempDir(), fr) // not a Hinter
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(t, h, getLine(1, "a")+closeLine(2)); err != nil {
		t.Fatal(err)
	}
	if st := h.Stats(); st.RemoteHits != 1 || st.RemoteFailed || st.Prefetched != 0 {
		t.Errorf("stats %+v", st)
	}
}
