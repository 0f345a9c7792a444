package buildcache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve runs Handler(st, scope, stats) on a unix socket and returns a
// client of it.
func serve(t *testing.T, st Store, scope string, stats *Stats, opts ...Option) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "bc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(st, scope, stats, opts...)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	t.Cleanup(func() { c.Close() })
	return c
}

func clientRead(t *testing.T, c *Client, action string) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	e, err := c.GetAction(ctx, actionID(action))
	if err != nil {
		return nil, err
	}
	rc, n, err := c.OpenOutput(ctx, e.OutputID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dt, err := io.ReadAll(rc)
	if err == nil && (int64(len(dt)) != n || n != e.Size) {
		t.Errorf("sizes: read %d, header %d, entry %d", len(dt), n, e.Size)
	}
	return dt, err
}

func TestHandlerClient(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	var stats Stats
	c := serve(t, st, "tenant-a", &stats)
	o := newObject(strings.Repeat("object bytes ", 10000))

	if _, err := c.GetAction(ctx, actionID("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get before put: %v, want ErrNotFound", err)
	}
	if err := c.Put(ctx, actionID("x"), o.id, int64(len(o.data)), bytes.NewReader(o.data)); err != nil {
		t.Fatal(err)
	}
	dt, err := clientRead(t, c, "x")
	if err != nil || !bytes.Equal(dt, o.data) {
		t.Fatalf("read back: %d bytes, %v", len(dt), err)
	}
	empty := newObject("")
	if err := c.Put(ctx, actionID("empty"), empty.id, 0, bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	if dt, err := clientRead(t, c, "empty"); err != nil || len(dt) != 0 {
		t.Errorf("empty output: %q, %v", dt, err)
	}

	// The handler serves its scope only: the entry is the store's in
	// tenant-a, nowhere else.
	if _, err := st.GetAction(ctx, "tenant-a", actionID("x")); err != nil {
		t.Errorf("not stored in the handler's scope: %v", err)
	}
	other := serve(t, st, "tenant-b", nil)
	if _, err := other.GetAction(ctx, actionID("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("another scope's handler: %v, want ErrNotFound", err)
	}

	// A body that is not what its id says is refused.
	err = c.Put(ctx, actionID("bad"), o.id, 5, strings.NewReader("wrong"))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Errorf("bad put: %v, want 400", err)
	}

	got := stats.Snapshot()
	want := StatsSnapshot{Hits: 2, Misses: 1, Puts: 2, BytesRead: int64(len(o.data)), BytesWritten: int64(len(o.data)), Errors: 1}
	got.Duration = 0
	if got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	if stats.Nanos.Load() <= 0 {
		t.Error("no time counted")
	}
}

func TestHandlerCorruptObject(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	var stats Stats
	c := serve(t, st, "s", &stats)
	o := newObject("to be corrupted")
	put(t, st, "s", "x", o)
	p, _ := st.path("s", "o", o.id)
	if err := os.WriteFile(p, []byte("to be CORRUPTED"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.OpenOutput(ctx, o.id); !errors.Is(err, ErrNotFound) {
		t.Errorf("corrupt object over the wire: %v, want ErrNotFound", err)
	}
	if _, err := c.GetAction(ctx, actionID("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("action of the corrupt object: %v, want ErrNotFound", err)
	}
	if n := stats.Errors.Load(); n != 1 {
		t.Errorf("errors = %d, want 1 (the corrupt object)", n)
	}
}

func TestHandlerRefuses(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	c := serve(t, st, "s", nil, WithMaxObjectSize(10))
	o := newObject("more than ten bytes")
	var se *StatusError
	if err := c.Put(ctx, actionID("x"), o.id, int64(len(o.data)), bytes.NewReader(o.data)); !errors.As(err, &se) || se.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("put over the limit: %v, want 413", err)
	}
	for _, u := range []string{"/v1/actions/zz", "/v1/actions/abcd", "/v1/outputs/" + strings.Repeat("0", 63)} {
		resp, err := c.hc.Get("http://buildcache" + u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", u, resp.StatusCode)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "no-such-socket"))
	_, err := c.GetAction(context.Background(), actionID("x"))
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("get through a missing socket: %v, want a connection error", err)
	}
}
