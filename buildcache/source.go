package buildcache

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// The helper's sources: this package's and package cacheprog's, tests
// left out by HelperSource.
//
//go:embed *.go cacheprog/*.go
var sources embed.FS

// HelperPackage is the helper's main package in HelperSource.
const HelperPackage = "./cmd/buildsvc-gocacheprog"

// HelperGoVersion is the go line of HelperSource's go.mod: the first Go
// with a stable GOCACHEPROG. The helper's code keeps to its library.
const HelperGoVersion = "1.24"

// helperMain is cmd/buildsvc-gocacheprog/main.go, byte for byte (its test
// checks it).
const helperMain = `// Command buildsvc-gocacheprog is the build service's GOCACHEPROG helper:
// the go command runs it as its build cache. See package
// github.com/buildsvc/buildsvc/buildcache/cacheprog.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cacheprog.Main(ctx, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
`

// HelperSource is a module holding the GOCACHEPROG helper's source and
// nothing else, as file contents by slash-separated path: it builds with
// the standard library alone, offline, e.g. `go build -trimpath -o
// buildsvc-gocacheprog ./cmd/buildsvc-gocacheprog` in a copy of it
// (package bootstrap builds the builder image's helper so). One version
// of this package always gives the same files.
func HelperSource() (map[string][]byte, error) {
	m := map[string][]byte{
		"go.mod":                                []byte("module github.com/buildsvc/buildsvc\n\ngo " + HelperGoVersion + "\n"),
		path.Join(HelperPackage[2:], "main.go"): []byte(helperMain),
	}
	err := fs.WalkDir(sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return err
		}
		dt, err := fs.ReadFile(sources, p)
		m[path.Join("buildcache", p)] = dt
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("helper source: %w", err)
	}
	return m, nil
}
