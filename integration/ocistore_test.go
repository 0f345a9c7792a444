//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildcache/ocistore"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// TestBuildCacheInRegistry keeps the build-cache store in the stack's
// registry (with login) instead of on disk, as a fleet of servers would
// share it: a build on a brand-new buildkitd fills it, the next one, on
// another brand-new buildkitd, gets go build's results from it. On the
// real registry, a scope's outputs are in no other scope's repository,
// and an output whose bytes were changed on the registry's disk fails its
// digest check when read.
func TestBuildCacheInRegistry(t *testing.T) {
	t.Parallel() // on buildkitds of its own
	w := startWarmStack(t)
	kc, err := server.RegistryKeychain(os.Getenv("DOCKER_CONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	repo := fmt.Sprintf("%s/buildcache-test/run%d", os.Getenv("REGISTRY_ADDR"), time.Now().UnixNano()) // empty: a store of its own
	st, err := ocistore.New(repo, remote.WithAuthFromKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, w.configure(t, func(buildcache.Store) buildcache.Store { return st }))
	c := ts.Client
	src := newRepo(t, sampleFiles(t))

	r1 := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: src.URL, GitCommit: "main", ImageTag: tagFor(t, "cold")}))
	u1 := r1.GetCacheUsage()
	if u1.GetBuildCachePuts() == 0 || u1.GetBuildCacheBytesWritten() == 0 {
		t.Fatalf("first build put nothing into the registry store: %v", u1)
	}
	files := sampleFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "hello from sampleapp", "hello from the registry's cache", 1)
	sha := src.commit("main", "second", files)
	r2 := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: src.URL, GitCommit: sha, ImageTag: tagFor(t, "warm")}))
	u2 := r2.GetCacheUsage()
	t.Logf("first build: %v\nsecond build: %v", u1, u2)
	if u2.GetBuildCacheHits() == 0 || u2.GetBuildCacheBytesRead() == 0 {
		t.Errorf("second build on a new builder got nothing from the registry store: %v", u2)
	}
	if r1.GetBuilder() == r2.GetBuilder() {
		t.Errorf("both builds ran on %q", r1.GetBuilder())
	}
	if out := runEntrypoint(t, pushedImage(t, r2.Image)); !strings.HasPrefix(out, "hello from the registry's cache") {
		t.Errorf("binary printed %q", out)
	}

	// The entries are in the registry: the scope's repository lists the
	// actions' tags.
	ctx := context.Background()
	var scopeRepo name.Repository
	var tags []string
	catalog, err := remote.Catalog(ctx, mustRegistry(t), remote.WithAuthFromKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range catalog {
		if strings.HasPrefix(r, strings.TrimPrefix(repo, os.Getenv("REGISTRY_ADDR")+"/")+"/") {
			scopeRepo, err = name.NewRepository(os.Getenv("REGISTRY_ADDR") + "/" + r)
			if err != nil {
				t.Fatal(err)
			}
			if tags, err = remote.List(scopeRepo, remote.WithAuthFromKeychain(kc)); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if len(tags) == 0 {
		t.Fatalf("no scope repository with tags under %s in %v", repo, catalog)
	}
	// The scope from a manifest's annotation, and an output of it that is
	// not empty (Go stores empty ones too).
	var scope string
	var e buildcache.Entry
	for _, tag := range tags {
		desc, err := remote.Get(scopeRepo.Tag(tag), remote.WithAuthFromKeychain(kc))
		if err != nil {
			t.Fatal(err)
		}
		var mf struct {
			Annotations map[string]string `json:"annotations"`
		}
		if err := json.Unmarshal(desc.Manifest, &mf); err != nil {
			t.Fatal(err)
		}
		scope = mf.Annotations[ocistore.ScopeAnnotation]
		actionID, _ := hex.DecodeString(strings.TrimPrefix(tag, "a-"))
		if e, err = st.GetAction(ctx, scope, actionID); err != nil {
			t.Fatalf("scope %q, action %s: %v", scope, tag, err)
		}
		if e.Size > 0 {
			break
		}
	}
	if e.Size == 0 {
		t.Fatalf("no output of the scope %q has bytes", scope)
	}
	if _, _, err := st.OpenOutput(ctx, scope+"-other", e.OutputID); !errors.Is(err, buildcache.ErrNotFound) {
		t.Errorf("another scope opened this scope's output: %v, want ErrNotFound", err)
	}

	// Corrupt the output on the registry's disk, same size: reading it
	// fails its digest check.
	data := filepath.Join(os.Getenv("STACK_DIR"), "registry", "data", "docker", "registry", "v2", "blobs", "sha256",
		hex.EncodeToString(e.OutputID)[:2], hex.EncodeToString(e.OutputID), "data")
	dt, err := os.ReadFile(data)
	if err != nil {
		t.Fatalf("the output's blob on the registry's disk: %v", err)
	}
	if sum := sha256.Sum256(dt); !bytes.Equal(sum[:], e.OutputID) {
		t.Fatalf("blob %s does not hash to its output id", data)
	}
	bad := bytes.Clone(dt)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(data, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(data, dt, 0o644) })
	rc, _, err := st.OpenOutput(ctx, scope, e.OutputID)
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if err == nil {
		t.Error("a corrupted output read without an error")
	}
}

// mustRegistry is the stack's registry.
func mustRegistry(t *testing.T) name.Registry {
	t.Helper()
	r, err := name.NewRegistry(os.Getenv("REGISTRY_ADDR"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
