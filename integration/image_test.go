//go:build integration

package integration

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// pushedImage fetches ref from the registry with the stack's credentials
// (DOCKER_CONFIG) and checks it with go-containerregistry's validate.
func pushedImage(t testing.TB, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatalf("fetch %s: %v", ref, err)
	}
	if err := validateImage(img); err != nil {
		t.Fatalf("validate %s: %v", ref, err)
	}
	return img
}

// validateImage checks what `crane validate` checks: the manifest, the
// config and every layer (its compressed bytes hash to its digest, its
// uncompressed bytes to its diff id in the config, and they are a tar).
// go-containerregistry's validate.Image reads every compressed layer as
// gzip (google/go-containerregistry#1826), so for zstd layers its layer
// check fails on a valid image: here the layers are checked through
// Layer.Uncompressed, which detects the compression from the bytes.
func validateImage(img v1.Image) error {
	if err := validate.Image(img, validate.Fast); err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return fmt.Errorf("%d layers, %d diff ids", len(layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range layers {
		dgst, err := l.Digest()
		if err != nil {
			return err
		}
		if got, err := hashOf(l.Compressed); err != nil || got != dgst {
			return fmt.Errorf("layer %d: compressed bytes hash to %v, its digest is %s (%v)", i, got, dgst, err)
		}
		if got, err := hashOf(func() (io.ReadCloser, error) { return tarOf(l) }); err != nil || got != cfg.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %d: uncompressed bytes hash to %v, its diff id is %s (%v)", i, got, cfg.RootFS.DiffIDs[i], err)
		}
	}
	return nil
}

// hashOf is the sha256 of what open reads.
func hashOf(open func() (io.ReadCloser, error)) (v1.Hash, error) {
	rc, err := open()
	if err != nil {
		return v1.Hash{}, err
	}
	defer rc.Close()
	h, _, err := v1.SHA256(rc)
	return h, err
}

// tarOf returns l's uncompressed bytes, having checked that they are a
// tar: its entries are read as they are hashed.
func tarOf(l v1.Layer) (io.ReadCloser, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer rc.Close()
		tr := tar.NewReader(io.TeeReader(rc, pw))
		for {
			_, err := tr.Next()
			if errors.Is(err, io.EOF) {
				_, err = io.Copy(io.Discard, io.TeeReader(rc, pw)) // the end blocks
				pw.CloseWithError(err)
				return
			}
			if err != nil {
				pw.CloseWithError(fmt.Errorf("not a tar: %w", err))
				return
			}
		}
	}()
	return pr, nil
}

// tagDigest asks the registry which manifest the tag points at.
func tagDigest(t testing.TB, tag string) string {
	t.Helper()
	r, err := name.NewTag(tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(r, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatalf("HEAD %s: %v", tag, err)
	}
	return desc.Digest.String()
}

// runEntrypoint extracts the image's entrypoint binary from its file
// system and runs it on the host (it is a static Linux binary).
func runEntrypoint(t testing.TB, img v1.Image, args ...string) string {
	t.Helper()
	bin := extractEntrypoint(t, img)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("run %s: %v\n%s", bin, err, out)
	}
	return string(out)
}

// extractEntrypoint writes the image's entrypoint binary to a temporary
// file and returns its path.
func extractEntrypoint(t testing.TB, img v1.Image) string {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) == 0 {
		t.Fatal("image has no entrypoint")
	}
	want := strings.TrimPrefix(cfg.Config.Entrypoint[0], "/")
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	bin := filepath.Join(t.TempDir(), filepath.Base(want))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("entrypoint %s not in the image", want)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") != want {
			continue
		}
		f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return bin
	}
}

func imageLabels(t testing.TB, img v1.Image) map[string]string {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Config.Labels
}
