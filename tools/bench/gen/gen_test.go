package gen

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// treeHash hashes every file's path and content under dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Write([]byte(rel + "\x00"))
		h.Write(data)
		h.Write([]byte{0})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func generate(t *testing.T, seed uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	if err := Generate(dir, seed); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGenerateDeterministic(t *testing.T) {
	first := treeHash(t, generate(t, 1))
	tests := []struct {
		name string
		seed uint64
		same bool
	}{
		{"same seed, same bytes", 1, true},
		{"another seed, other bytes", 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := treeHash(t, generate(t, tc.seed)); (got == first) != tc.same {
				t.Errorf("seed %d: hash %s, seed 1: %s; want same=%v", tc.seed, got, first, tc.same)
			}
		})
	}
}

func TestGenerateGraph(t *testing.T) {
	dir := generate(t, 1)
	for _, sz := range Sizes {
		t.Run(sz.Name, func(t *testing.T) {
			sum, err := os.ReadFile(filepath.Join(dir, "repos", sz.Name, "go.sum"))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(sum)), "\n")
			if want := 2 * sz.Modules; len(lines) != want {
				t.Errorf("go.sum has %d lines, want %d (a zip and a go.mod hash per module)", len(lines), want)
			}
			for _, l := range lines {
				if f := strings.Fields(l); len(f) != 3 || !strings.HasPrefix(f[2], "h1:") || !strings.HasPrefix(f[0], ModulePrefix+"/"+sz.Name+"/") {
					t.Errorf("go.sum line %q is not MODULE VERSION h1:HASH of a %s module", l, sz.Name)
				}
			}
			gomod, err := os.ReadFile(filepath.Join(dir, "repos", sz.Name, "go.mod"))
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(gomod), " "+Version); n != sz.Modules {
				t.Errorf("go.mod requires %d modules, want %d", n, sz.Modules)
			}
		})
	}
}

func TestGraphReachable(t *testing.T) {
	for _, sz := range Sizes {
		t.Run(sz.Name, func(t *testing.T) {
			mods := graph(sz, rand.New(rand.NewPCG(1, 0)))
			seen := map[int]bool{}
			for i := range sz.Direct {
				seen[i] = true
				for _, k := range mods[i].closure {
					seen[k] = true
				}
			}
			for i, m := range mods {
				for _, k := range m.imports {
					if k <= i {
						t.Errorf("module %d imports %d: not a DAG in index order", i, k)
					}
				}
			}
			if len(seen) != sz.Modules {
				t.Errorf("%d of %d modules reachable from the main package", len(seen), sz.Modules)
			}
		})
	}
}
