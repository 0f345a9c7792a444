//go:build integration

package integration

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// TestVerifyBuild: the sample's build verifies reproducible (rebuilt from
// nothing, the same image digest) and the verification is stored with
// it. Then a server of the same history whose builds link with other
// flags (the service's configuration changed since) verifies the same
// build as not reproducible, naming the config and the binary's layer
// and file. An unknown build is NotFound.
func TestVerifyBuild(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	o := build(t, ts.Client, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "verify")})
	res := requireSuccess(t, o)
	id := o.events[0].GetBuildId()

	resp, err := ts.Client.VerifyBuild(t.Context(), &buildv1.VerifyBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVerification()
	if !v.GetReproducible() || len(v.GetPlatforms()) != 1 || v.GetPlatforms()[0].GetRebuiltDigest() != res.GetDigest() ||
		v.GetRebuildDuration().AsDuration() <= 0 {
		t.Fatalf("verification %v, want the same digest %s", v, res.GetDigest())
	}
	info, err := ts.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil || !info.GetVerification().GetReproducible() {
		t.Errorf("stored verification %v (%v)", info.GetVerification(), err)
	}
	if _, err := ts.Client.VerifyBuild(t.Context(), &buildv1.VerifyBuildRequest{BuildId: "20990101-000000.000000-0000000000"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown build: %v, want NotFound", err)
	}

	ts.Stop()
	store, err := history.Open(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	changed := startTestServer(t, func(c *server.Config) {
		c.Store = store
		c.GoFlags = "-ldflags=-s" // symbols stripped: another binary
	})
	resp, err = changed.Client.VerifyBuild(t.Context(), &buildv1.VerifyBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	v = resp.GetVerification()
	t.Logf("verification after the change: %v", v)
	if v.GetReproducible() || len(v.GetPlatforms()) != 1 || v.GetPlatforms()[0].GetRebuiltDigest() == res.GetDigest() {
		t.Fatalf("verification %v, want another digest", v)
	}
	var whats, files []string
	for _, d := range v.GetPlatforms()[0].GetDifferences() {
		whats = append(whats, d.GetWhat())
		files = append(files, d.GetFiles()...)
	}
	if len(whats) < 2 || whats[0] != "config" || !strings.HasPrefix(whats[len(whats)-1], "layer ") {
		t.Errorf("differences %q, want the config and the binary's layer", whats)
	}
	if len(files) != 1 || !strings.HasPrefix(files[0], "usr/local/bin/") || !strings.HasSuffix(files[0], ": content") {
		t.Errorf("differing files %q, want the binary's content", files)
	}
	info, err = changed.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil || info.GetVerification() == nil || info.GetVerification().GetReproducible() {
		t.Errorf("stored verification %v (%v), want the last one, not reproducible", info.GetVerification(), err)
	}
}
