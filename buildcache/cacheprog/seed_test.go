package cacheprog

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeSeed makes a seed the way the bootstrap does: a run with a fixed
// time that puts entries, and returns its directory, made read-only.
func makeSeed(t *testing.T, epoch time.Time, puts string) string {
	t.Helper()
	dir := t.TempDir()
	h, err := New(dir, nil, WithFixedTime(epoch))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(t, h, puts+closeLine(99)); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			mode := os.FileMode(0o444)
			if d.IsDir() {
				mode = 0o555
			}
			_ = os.Chmod(p, mode)
		}
		return nil
	})
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return dir
}

// tree is every file of dir with its bytes.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		dt, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m[rel] = string(dt)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The seed is asked after the local directory and before the store; its
// hits are answered in place (nothing copied, nothing written to it, the
// store not asked); a local entry wins over it; a miss in both goes to
// the store.
func TestSeedLevel(t *testing.T) {
	epoch := time.Unix(946684800, 0).UTC()
	seed := makeSeed(t, epoch, putLine(1, "std", "compiled fmt")+putLine(2, "both", "seed's both"))
	before := tree(t, seed)

	fake := newFakeRemote()
	fake.add("std", "the store's fmt")
	fake.add("remote", "remote output")
	h, err := New(t.TempDir(), fake, WithSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(t, h, putLine(1, "both", "local both")); err != nil {
		t.Fatal(err)
	}
	fake.calls, fake.puts = 0, nil
	r, err := exchange(t, h, getLine(1, "std")+getLine(2, "both")+getLine(3, "remote")+getLine(4, "none")+closeLine(5))
	if err != nil {
		t.Fatal(err)
	}
	checkHit(t, r[1], "compiled fmt")
	if p, _ := r[1]["DiskPath"].(string); !strings.HasPrefix(p, seed+string(filepath.Separator)) {
		t.Errorf("seed hit at %s, not in the seed %s", p, seed)
	}
	if got, _ := time.Parse(time.RFC3339Nano, r[1]["Time"].(string)); !got.Equal(epoch) {
		t.Errorf("seed hit Time = %v, want the seed's %v", r[1]["Time"], epoch)
	}
	checkHit(t, r[2], "local both")
	checkHit(t, r[3], "remote output")
	checkMiss(t, r[4])
	if st := h.Stats(); st.SeedHits != 1 || st.LocalHits != 1 || st.RemoteHits != 1 || st.Misses != 1 {
		t.Errorf("stats = %+v, want one hit at each level and one miss", st)
	}
	// "remote": its action and its output; "none": its action. "std",
	// which the store has too, is not asked for.
	if fake.calls != 3 {
		t.Errorf("store asked %d times, want 3: only for the two entries the machine lacks", fake.calls)
	}
	if after := tree(t, seed); len(after) != len(before) {
		t.Errorf("the seed changed: %d files, was %d", len(after), len(before))
	} else {
		for p, dt := range before {
			if after[p] != dt {
				t.Errorf("seed file %s changed", p)
			}
		}
	}
	if _, err := os.Stat(h.objectPath(id("compiled fmt"))); !os.IsNotExist(err) {
		t.Errorf("a seed hit was copied to the local directory: %v", err)
	}
}

// A seed is the same files whatever the clock says when it is made: every
// record carries the fixed time, and no trim mark is written.
func TestSeedReproducible(t *testing.T) {
	epoch := time.Unix(946684800, 0).UTC()
	puts := putLine(1, "a", "output a") + putLine(2, "b", "output b")
	first := tree(t, makeSeed(t, epoch, puts))
	time.Sleep(2 * time.Millisecond)
	second := tree(t, makeSeed(t, epoch, puts))
	if len(first) != 4 {
		t.Errorf("seed files = %v, want two records and two objects", first)
	}
	for p, dt := range first {
		if second[p] != dt {
			t.Errorf("%s differs between two seeds: %q, %q", p, dt, second[p])
		}
		if strings.Contains(p, trimFile) {
			t.Errorf("a seed has %s", p)
		}
	}
}

// Main takes the seed and the fixed time from the environment, and
// refuses a SOURCE_DATE_EPOCH that is not seconds.
func TestMainSeedEnv(t *testing.T) {
	epoch := time.Unix(946684800, 0).UTC()
	seed := makeSeed(t, epoch, putLine(1, "std", "compiled fmt"))
	env := map[string]string{DirEnv: t.TempDir(), SeedEnv: seed}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), func(k string) string { return env[k] }, strings.NewReader(getLine(1, "std")+closeLine(2)), &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), `"DiskPath":"`+seed) {
		t.Errorf("Main = %d, out %s, stderr %s: want a hit in the seed", code, out.String(), errOut.String())
	}

	env = map[string]string{DirEnv: t.TempDir(), SourceDateEpochEnv: "yesterday"}
	errOut.Reset()
	if code := Main(context.Background(), func(k string) string { return env[k] }, strings.NewReader(closeLine(1)), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), SourceDateEpochEnv) {
		t.Errorf("Main with a bad %s = %d, stderr %q", SourceDateEpochEnv, code, errOut.String())
	}
	env = map[string]string{DirEnv: t.TempDir(), SourceDateEpochEnv: "946684800"}
	out.Reset()
	if code := Main(context.Background(), func(k string) string { return env[k] }, strings.NewReader(putLine(1, "a", "x")+closeLine(2)), &out, &errOut); code != 0 {
		t.Fatalf("Main = %d: %s", code, errOut.String())
	}
	dt, err := os.ReadFile(idPath(filepath.Join(env[DirEnv], LocalSubdir), "a", id("a")))
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(dt)), " 946684800000000000") {
		t.Errorf("record %q (%v), want the fixed time", dt, err)
	}
}
