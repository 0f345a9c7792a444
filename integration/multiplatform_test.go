//go:build integration

package integration

import (
	"debug/elf"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"

	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// TestMultiPlatform builds the sample for linux/amd64 and linux/arm64 in
// one build: the pushed index has both images, each valid, on the base
// image's variant for its platform; the result lists both with their
// digests and sizes; the amd64 binary runs here and the arm64 one, an
// aarch64 ELF, under qemu-user-static. A base image without arm64 is
// refused before anything is built.
func TestMultiPlatform(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t, func(c *server.Config) {
		// The builder image may be a base too (the refusal below).
		c.Tenants = &policy.Policies{Defaults: policy.Tenant{AllowLoopback: true, AllowAnyPort: true,
			BaseImages: []string{os.Getenv("REGISTRY_ADDR") + "/buildsvc/"}}}
	})
	repo := newRepo(t, sampleFiles(t))
	res := requireSuccess(t, build(t, ts.Client, &buildv1.CreateImageRequest{
		GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "multi"),
		Platforms: []string{"linux/amd64", "linux/arm64"},
	}))
	if !res.GetIndex() || len(res.GetPlatforms()) != 2 {
		t.Fatalf("result %v, want an index of two platforms", res)
	}
	ref, err := name.ParseReference(res.GetImage(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	for _, m := range im.Manifests {
		if m.Platform == nil {
			t.Fatalf("index entry %s has no platform", m.Digest)
		}
		p := m.Platform.OS + "/" + m.Platform.Architecture
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateImage(img); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != p {
			t.Errorf("the %s entry's config says %s/%s", p, cf.OS, cf.Architecture)
		}
		images[p] = img
	}
	for i, want := range []string{"linux/amd64", "linux/arm64"} {
		got := res.GetPlatforms()[i]
		d, _ := images[want].Digest()
		if got.GetPlatform() != want || got.GetDigest() != d.String() || got.GetSize() <= 0 {
			t.Errorf("result platform %d = %v, want %s %s with a size", i, got, want, d)
		}
	}
	if len(images) != 2 {
		t.Fatalf("index platforms %v, want linux/amd64 and linux/arm64", images)
	}
	if out := runEntrypoint(t, images["linux/amd64"]); !strings.HasPrefix(out, "hello from sampleapp") {
		t.Errorf("amd64 binary printed %q", out)
	}
	bin := extractEntrypoint(t, images["linux/arm64"])
	if f, err := elf.Open(bin); err != nil || f.Machine != elf.EM_AARCH64 {
		t.Fatalf("arm64 binary: %v, machine %v", err, f)
	}
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-user-static is not installed (scripts/test.sh installs it): %v", err)
	}
	if out, err := exec.Command(qemu, bin).CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "hello from sampleapp") {
		t.Errorf("arm64 binary under qemu: %v, printed %q", err, out)
	}

	// The builder image is amd64 only: as a base for arm64 it is refused
	// before the build, naming the platform and the image.
	base := os.Getenv("BUILDER_IMAGE")
	o := build(t, ts.Client, &buildv1.CreateImageRequest{
		GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "no-arm64"),
		BaseImage: base, Platforms: []string{"linux/arm64"},
	})
	requireRefusedAfter(t, ts.Client, o, 1, codes.InvalidArgument, "platforms: linux/arm64 is not a platform of base image", base, "linux/amd64")
}
