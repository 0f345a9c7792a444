package cacheprog_test

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
)

// buildHelper builds the helper from buildcache.HelperSource, offline, as
// the bootstrap does in the builder image.
func buildHelper(t *testing.T, dir string) string {
	t.Helper()
	files, err := buildcache.HelperSource()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "helper-src")
	for p, dt := range files {
		if strings.HasSuffix(p, "_test.go") {
			t.Errorf("helper source has a test file %s", p)
		}
		q := filepath.Join(src, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(q), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(q, dt, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "buildsvc-gocacheprog")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, buildcache.HelperPackage)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the helper from its source: %v\n%s", err, out)
	}
	return bin
}

// The program imports no more than the runtime: a cold build of it is
// a few seconds.
const progMain = `package main

import "example.com/prog/greet"

func main() { println(greet.Hello("%s")) }
`

const progGreet = `package greet

func Hello(name string) string { return "hello, " + name }
`

func writeProg(t *testing.T, dir, name string) {
	t.Helper()
	for p, dt := range map[string]string{
		"go.mod":         "module example.com/prog\n\ngo 1.24\n",
		"main.go":        strings.Replace(progMain, "%s", name, 1),
		"greet/greet.go": progGreet,
	} {
		q := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(q), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(q, []byte(dt), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// goBuild builds the program in prog with the helper as GOCACHEPROG and
// cache as both GOCACHE and the helper's directory, as the compile step
// does; it returns the binary and go's stderr.
func goBuild(t *testing.T, helper, prog, cache, socket, out string) ([]byte, string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = prog
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(),
		"GOCACHE="+cache, "GOCACHEPROG="+helper,
		cacheprog.DirEnv+"="+cache, cacheprog.SocketEnv+"="+socket,
		"GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOWORK=off",
	)
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v\n%s", err, stderr.String())
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin, stderr.String()
}

// A second builder with an empty cache gets the first one's work from the
// store; a store that is gone costs a warning, not the build.
func TestGoBuildWithStore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	helper := buildHelper(t, dir)

	st, err := buildcache.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "gcp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var stats buildcache.Stats
	srv := &http.Server{Handler: buildcache.Handler(st, "tenant", &stats)}
	go srv.Serve(ln)
	defer srv.Close()

	prog := filepath.Join(dir, "prog")
	writeProg(t, prog, "world")

	// A cold builder fills the store.
	first, stderr := goBuild(t, helper, prog, filepath.Join(dir, "cache1"), sock, filepath.Join(dir, "bin1"))
	if stderr != "" {
		t.Errorf("first build's stderr: %s", stderr)
	}
	s1 := stats.Snapshot()
	if s1.Puts == 0 || s1.Hits != 0 || s1.Errors != 0 {
		t.Fatalf("after the first build: %+v, want puts and no hits", s1)
	}

	// greet's archive (the smallest object with its string in it) rots,
	// its size unchanged: the second build misses it and compiles greet
	// again.
	var rotten []byte
	var rottenPath string
	_ = filepath.WalkDir(st.Dir(), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(filepath.Dir(p))) != "o" {
			return nil
		}
		dt, err := os.ReadFile(p)
		if err == nil && bytes.Contains(dt, []byte("hello, ")) && (rotten == nil || len(dt) < len(rotten)) {
			rotten, rottenPath = dt, p
		}
		return nil
	})
	if rotten == nil {
		t.Fatal("no object of package greet in the store")
	}
	rotten[len(rotten)/2] ^= 0xff
	if err := os.WriteFile(rottenPath, rotten, 0o600); err != nil {
		t.Fatal(err)
	}

	// A new builder, its local cache and GOCACHE empty, gets the rest
	// from the store, and builds the same binary.
	cache2 := filepath.Join(dir, "cache2")
	second, stderr := goBuild(t, helper, prog, cache2, sock, filepath.Join(dir, "bin2"))
	if stderr != "" {
		t.Errorf("second build's stderr: %s", stderr)
	}
	s2 := stats.Snapshot()
	hits, puts := s2.Hits-s1.Hits, s2.Puts-s1.Puts
	t.Logf("first build: %d puts; second: %d hits, %d misses, %d puts, %d bytes read", s1.Puts, hits, s2.Misses-s1.Misses, puts, s2.BytesRead)
	if hits < s1.Puts/2 || puts > s1.Puts/4 || s2.BytesRead == 0 {
		t.Errorf("second build: %d hits and %d puts, after %d puts: it did not build from the store", hits, puts, s1.Puts)
	}
	if s2.Errors != 1 {
		t.Errorf("errors = %d, want 1 (the rotten object)", s2.Errors)
	}
	if !bytes.Equal(first, second) {
		t.Error("the binary built from the store differs")
	}
	if entries, _ := os.ReadDir(filepath.Join(cache2, cacheprog.LocalSubdir, "o")); len(entries) == 0 {
		t.Error("the store's hits did not fill the local directory")
	}

	// The store is gone: a changed program still builds, with one line
	// on stderr.
	srv.Close()
	writeProg(t, prog, "gopher")
	_, stderr = goBuild(t, helper, prog, filepath.Join(dir, "cache1"), sock, filepath.Join(dir, "bin3"))
	if !strings.Contains(stderr, "buildsvc-gocacheprog: build cache store unreachable (") || !strings.Contains(stderr, "building with the local cache only") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr without the store = %q, want one warning line", stderr)
	}
	out, err := exec.Command(filepath.Join(dir, "bin3")).CombinedOutput()
	if err != nil || string(out) != "hello, gopher\n" {
		t.Errorf("program built without the store says %q (%v)", out, err)
	}
}
