package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Several --tag (-t) flags make one build: the first is image_tag, the
// others image_tags; --build-label and --request-id reach the request.
func TestBuildTagsLabelsRequestID(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "quiet", "--repo", "https://git.example/app.git",
		"-t", "registry.example/team/app:v1", "--tag", "registry.example/team/app:latest", "-t", "other.example/app:v1",
		"--build-label", "team=payments", "--build-label", "ticket=OPS-1", "--request-id", "ci-42")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	want := &buildv1.CreateImageRequest{
		GitRepo: "https://git.example/app.git", ImageTag: "registry.example/team/app:v1",
		ImageTags:   []string{"registry.example/team/app:latest", "other.example/app:v1"},
		BuildLabels: map[string]string{"team": "payments", "ticket": "OPS-1"},
		RequestId:   "ci-42",
	}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Errorf("server got %v, want [%v]", calls, want)
	}
	bad := runCLI(t, "build", "--server", addr, "--repo", "https://git.example/app.git", "-t", "r.example/a:v1", "--build-label", "team")
	if bad.code != exitUsage {
		t.Errorf("--build-label without a value: exit %d, want %d", bad.code, exitUsage)
	}
}

// `builds get` shows every tag, the build's labels and its request id.
func TestGetShowsTagsAndLabels(t *testing.T) {
	f := &fakeServer{info: &buildv1.BuildInfo{BuildId: "b-1", State: buildv1.BuildState_BUILD_STATE_SUCCEEDED,
		Labels: map[string]string{"team": "payments", "ci": "42"},
		Request: &buildv1.CreateImageRequest{ImageTag: "r.example/a:v1", ImageTags: []string{"r.example/a:v1", "r.example/a:latest"},
			RequestId: "ci-42"}}}
	addr := f.start(t)
	r := runCLI(t, "builds", "get", "b-1", "--server", addr)
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"tag         r.example/a:v1\n", "tag         r.example/a:latest\n",
		"label       ci=42\nlabel       team=payments\n", "request id  ci-42\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Count(r.stdout, "r.example/a:v1") != 1 {
		t.Errorf("the first tag is shown twice:\n%s", r.stdout)
	}
}

// --compression, --compression-level and --force-compression reach the
// request; an unknown format is a usage error.
func TestBuildCompressionFlags(t *testing.T) {
	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "quiet", "--repo", "https://git.example/app.git", "-t", "r.example/a:v1",
		"--compression", "gzip", "--compression-level", "9", "--force-compression")
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	want := &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "r.example/a:v1",
		Compression: buildv1.LayerCompression_LAYER_COMPRESSION_GZIP, CompressionLevel: 9, ForceCompression: true}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Errorf("server got %v, want [%v]", calls, want)
	}
	for _, bad := range []string{"lz4", "unspecified"} {
		if r := runCLI(t, "build", "--server", addr, "--repo", "https://git.example/app.git", "-t", "r.example/a:v1", "--compression", bad); r.code != exitUsage {
			t.Errorf("--compression %s: exit %d, want %d", bad, r.code, exitUsage)
		}
	}
}
