package server

import (
	"archive/tar"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layer is a tar layer of files (path -> content), every time the epoch.
func layer(t *testing.T, files map[string]string, mode int64) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: mode, Size: int64(len(files[p])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(files[p]))
	}
	_ = tw.Close()
	dt := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(dt)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func img(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	i, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestCompareImages(t *testing.T) {
	base := map[string]string{"etc/passwd": "root:x:0:0", "etc/group": "root:x:0:"}
	bin := map[string]string{"usr/local/bin/app": "binary v1"}
	orig := img(t, layer(t, base, 0o644), layer(t, bin, 0o755))

	for _, tc := range []struct {
		name    string
		rebuilt v1.Image
		want    []string // "what: files"
	}{
		{"the same", img(t, layer(t, base, 0o644), layer(t, bin, 0o755)), nil},
		{"the binary's content", img(t, layer(t, base, 0o644), layer(t, map[string]string{"usr/local/bin/app": "binary v2"}, 0o755)),
			[]string{"config: ", "layer 1: usr/local/bin/app: content"}},
		{"a mode", img(t, layer(t, base, 0o644), layer(t, bin, 0o700)),
			[]string{"config: ", "layer 1: usr/local/bin/app: metadata"}},
		{"a file more", img(t, layer(t, base, 0o644), layer(t, map[string]string{"usr/local/bin/app": "binary v1", "tmp/x": "x"}, 0o755)),
			[]string{"config: ", "layer 1: tmp/x: only in the rebuild"}},
		{"a layer less", img(t, layer(t, base, 0o644)),
			[]string{"config: ", "layer 1: usr/local/bin/app: only in the original"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diffs, err := compareImages(orig, tc.rebuilt)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range diffs {
				got = append(got, d.GetWhat()+": "+strings.Join(d.GetFiles(), "; "))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("differences %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("difference %d = %q, want %q...", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestFileDiffsBounded(t *testing.T) {
	orig, rebuilt := map[string]string{}, map[string]string{}
	for i := range 30 {
		p := string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		orig[p], rebuilt[p] = "m\x00one", "m\x00two"
	}
	got := fileDiffs(orig, rebuilt)
	if len(got) != maxDiffFiles+1 || got[maxDiffFiles] != "and 10 more" {
		t.Errorf("%d lines, last %q", len(got), got[len(got)-1])
	}
}
