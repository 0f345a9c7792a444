package main

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestPlatformLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  *buildv1.BuildResult
		want []string
	}{
		{"none read back", &buildv1.BuildResult{}, nil},
		{"one image", &buildv1.BuildResult{Platforms: []*buildv1.PlatformImage{{Platform: "linux/amd64", Digest: "sha256:aa", Size: 2048}}},
			[]string{"linux/amd64 sha256:aa 2KiB"}},
		{"with provenance", &buildv1.BuildResult{Index: true, Platforms: []*buildv1.PlatformImage{{Platform: "linux/arm64", Digest: "sha256:bb", Size: 1 << 20,
			Attestations: []*buildv1.Attestation{{Digest: "sha256:cc", PredicateTypes: []string{"https://slsa.dev/provenance/v0.2"}}}}}},
			[]string{"linux/arm64 sha256:bb 1MiB; attestations: sha256:cc (https://slsa.dev/provenance/v0.2)"}},
	} {
		if got := platformLines(tc.res); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// --provenance and --sbom reach the request.
func TestBuildProvenanceFlag(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "quiet", "--repo", "https://git.example/app.git", "-t", "r.example/a:v1", "--provenance", "--sbom")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	want := &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "r.example/a:v1", Provenance: true, Sbom: true}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Errorf("server got %v, want [%v]", calls, want)
	}
}

// --platform takes a comma-separated list, as docker buildx does, and
// more than once.
func TestBuildPlatformFlag(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "quiet", "--repo", "https://git.example/app.git", "-t", "r.example/a:v1",
		"--platform", "linux/amd64,linux/arm64", "--platform", "linux/arm/v7")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	want := &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "r.example/a:v1",
		Platforms: []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Errorf("server got %v, want [%v]", calls, want)
	}
}
