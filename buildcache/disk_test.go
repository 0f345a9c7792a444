package buildcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// object is a test output: its bytes and their id.
type object struct {
	data []byte
	id   []byte
}

func newObject(s string) object {
	sum := sha256.Sum256([]byte(s))
	return object{data: []byte(s), id: sum[:]}
}

func actionID(s string) []byte {
	sum := sha256.Sum256([]byte("action " + s))
	return sum[:]
}

func newStore(t *testing.T) *DiskStore {
	t.Helper()
	st, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func put(t *testing.T, st Store, scope, action string, o object) {
	t.Helper()
	if err := st.Put(context.Background(), scope, actionID(action), o.id, int64(len(o.data)), bytes.NewReader(o.data)); err != nil {
		t.Fatal(err)
	}
}

// read gets action's output in scope through the store, or the error.
func read(st Store, scope, action string) ([]byte, error) {
	ctx := context.Background()
	e, err := st.GetAction(ctx, scope, actionID(action))
	if err != nil {
		return nil, err
	}
	rc, n, err := st.OpenOutput(ctx, scope, e.OutputID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dt, err := io.ReadAll(rc)
	if err == nil && (int64(len(dt)) != n || n != e.Size) {
		err = errors.New("size mismatch")
	}
	return dt, err
}

func TestDiskStoreRoundTrip(t *testing.T) {
	st := newStore(t)
	o := newObject("compiled package")
	before := time.Now()
	put(t, st, "tenant-a", "x", o)
	e, err := st.GetAction(context.Background(), "tenant-a", actionID("x"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.OutputID, o.id) || e.Size != int64(len(o.data)) || e.Time.Before(before.Add(-time.Second)) {
		t.Errorf("entry = %+v", e)
	}
	dt, err := read(st, "tenant-a", "x")
	if err != nil || string(dt) != string(o.data) {
		t.Errorf("read = %q, %v", dt, err)
	}
	// An empty output is an output.
	empty := newObject("")
	put(t, st, "tenant-a", "empty", empty)
	if dt, err := read(st, "tenant-a", "empty"); err != nil || len(dt) != 0 {
		t.Errorf("empty output = %q, %v", dt, err)
	}
	if _, err := st.GetAction(context.Background(), "tenant-a", actionID("y")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown action: %v, want ErrNotFound", err)
	}
}

func TestDiskStoreScopes(t *testing.T) {
	st := newStore(t)
	a, b := newObject("a's output"), newObject("b's output")
	put(t, st, "tenant-a", "x", a)
	if _, err := st.GetAction(context.Background(), "tenant-b", actionID("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("scope b sees a's action: %v", err)
	}
	if _, _, err := st.OpenOutput(context.Background(), "tenant-b", a.id); !errors.Is(err, ErrNotFound) {
		t.Errorf("scope b reads a's output: %v", err)
	}
	// b's put of the same action does not change a's.
	put(t, st, "tenant-b", "x", b)
	if dt, err := read(st, "tenant-a", "x"); err != nil || string(dt) != "a's output" {
		t.Errorf("a's action after b's put = %q, %v", dt, err)
	}
	if dt, err := read(st, "tenant-b", "x"); err != nil || string(dt) != "b's output" {
		t.Errorf("b's action = %q, %v", dt, err)
	}
	// Scopes that look like paths stay inside the store.
	for _, scope := range []string{"../escape", "/abs", "a/../../b"} {
		put(t, st, scope, "x", a)
		if dt, err := read(st, scope, "x"); err != nil || string(dt) != "a's output" {
			t.Errorf("scope %q: %q, %v", scope, dt, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(st.Dir()))
	if len(entries) != 1 {
		t.Errorf("the store wrote next to its directory: %v", entries)
	}
	if err := st.Put(context.Background(), "", actionID("x"), a.id, int64(len(a.data)), bytes.NewReader(a.data)); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty scope: %v, want ErrInvalid", err)
	}
}

func TestDiskStorePutVerifies(t *testing.T) {
	o := newObject("the real bytes")
	for _, tc := range []struct {
		name     string
		outputID []byte
		size     int64
		body     string
	}{
		{"other bytes", o.id, int64(len(o.data)), "other bytes!!!"},
		{"short body", o.id, int64(len(o.data)), "the real"},
		{"long body", o.id, int64(len(o.data)), "the real bytes and more"},
		{"short id", o.id[:16], int64(len(o.data)), string(o.data)},
		{"negative size", o.id, -1, string(o.data)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			err := st.Put(context.Background(), "s", actionID("x"), tc.outputID, tc.size, strings.NewReader(tc.body))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("put: %v, want ErrInvalid", err)
			}
			if _, err := st.GetAction(context.Background(), "s", actionID("x")); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused put left an action: %v", err)
			}
			if n, err := st.DiskUsage(context.Background()); err != nil || n != 0 {
				t.Errorf("refused put left %d bytes (%v)", n, err)
			}
			if tmp, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(tmp) != 0 {
				t.Errorf("refused put left temporary files: %v", tmp)
			}
		})
	}
}

func TestDiskStoreCorruptObjectIsAMiss(t *testing.T) {
	st := newStore(t)
	o := newObject("bytes that will rot")
	put(t, st, "s", "x", o)
	p, _ := st.path("s", "o", o.id)
	if err := os.WriteFile(p, []byte("bytes that will ROT"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := st.OpenOutput(context.Background(), "s", o.id)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("open corrupt object: %v, want a CorruptError that is ErrNotFound", err)
	}
	if !bytes.Equal(ce.OutputID, o.id) || bytes.Equal(ce.Digest, o.id) {
		t.Errorf("corrupt error = %+v", ce)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("corrupt object not removed: %v", err)
	}
	// Its action is now a miss too.
	if _, err := st.GetAction(context.Background(), "s", actionID("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("action of a removed object: %v, want ErrNotFound", err)
	}
	// A put of the right bytes repairs it.
	put(t, st, "s", "x", o)
	if dt, err := read(st, "s", "x"); err != nil || string(dt) != string(o.data) {
		t.Errorf("after repair: %q, %v", dt, err)
	}
}

// age sets the times of action's files in scope to d ago.
func age(t *testing.T, st *DiskStore, scope, action string, o object, d time.Duration) {
	t.Helper()
	ap, _ := st.path(scope, "a", actionID(action))
	op, _ := st.path(scope, "o", o.id)
	then := time.Now().Add(-d)
	for _, p := range []string{ap, op} {
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDiskStoreClean(t *testing.T) {
	ctx := context.Background()
	big := func(s string) object { return newObject(strings.Repeat(s, 1000)) }
	o1, o2, o3 := big("1"), big("2"), big("3")
	setup := func(t *testing.T) *DiskStore {
		st := newStore(t)
		put(t, st, "a", "1", o1)
		put(t, st, "b", "2", o2)
		put(t, st, "a", "3", o3)
		age(t, st, "a", "1", o1, 3*time.Hour)
		age(t, st, "b", "2", o2, 2*time.Hour)
		age(t, st, "a", "3", o3, time.Hour)
		return st
	}
	for _, tc := range []struct {
		name     string
		maxBytes int64
		maxAge   time.Duration
		hit      string // action of scope "a" looked up before the clean
		output   bool   // the hit reads the output alone, not the action
		want     map[string]bool
	}{
		{"no limits", 0, 0, "", false, map[string]bool{"a/1": true, "b/2": true, "a/3": true}},
		{"by age", 0, 90 * time.Minute, "", false, map[string]bool{"a/3": true}},
		{"by size, oldest first", 2300, 0, "", false, map[string]bool{"b/2": true, "a/3": true}},
		{"an action hit is recent use", 2300, 0, "1", false, map[string]bool{"a/1": true, "a/3": true}},
		{"an output read is recent use", 2300, 0, "1", true, map[string]bool{"a/1": true, "a/3": true}},
		{"one left", 1200, 0, "", false, map[string]bool{"a/3": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := setup(t)
			switch {
			case tc.hit != "" && tc.output:
				rc, _, err := st.OpenOutput(ctx, "a", o1.id)
				if err != nil {
					t.Fatal(err)
				}
				rc.Close()
			case tc.hit != "":
				if _, err := st.GetAction(ctx, "a", actionID(tc.hit)); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := st.DiskUsage(ctx)
			res, err := st.Clean(ctx, tc.maxBytes, tc.maxAge)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a/1", "b/2", "a/3"} {
				scope, action, _ := strings.Cut(k, "/")
				_, err := read(st, scope, action)
				if got := err == nil; got != tc.want[k] {
					t.Errorf("%s kept = %v, want %v (%v)", k, got, tc.want[k], err)
				}
			}
			after, _ := st.DiskUsage(ctx)
			if res.Objects != 3-len(tc.want) || res.Actions != 3-len(tc.want) || before-after != res.Bytes {
				t.Errorf("clean result = %+v, usage %d -> %d", res, before, after)
			}
			if tc.maxBytes > 0 && after > tc.maxBytes {
				t.Errorf("usage %d after clean to %d", after, tc.maxBytes)
			}
		})
	}
}

func TestDiskStoreCleanStaleTemp(t *testing.T) {
	st := newStore(t)
	stale, fresh := filepath.Join(st.Dir(), "tmp", "put-stale"), filepath.Join(st.Dir(), "tmp", "put-fresh")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-2 * staleTemp)
	_ = os.Chtimes(stale, then, then)
	if _, err := st.Clean(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a write in progress was removed: %v", err)
	}
}
