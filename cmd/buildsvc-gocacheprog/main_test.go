package main

import (
	"bytes"
	"os"
	"path"
	"testing"

	"github.com/buildsvc/buildsvc/buildcache"
)

// The builder image's helper is built from buildcache.HelperSource, which
// carries its own copy of this command's main.go: they must not drift.
func TestMainIsHelperSource(t *testing.T) {
	files, err := buildcache.HelperSource()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if got := files[path.Join(buildcache.HelperPackage[2:], "main.go")]; !bytes.Equal(got, want) {
		t.Errorf("buildcache.HelperSource's main.go differs from this command's:\n%s", got)
	}
}
