//go:build integration

package integration

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

func diskUsage(t testing.TB, addr string) int64 {
	t.Helper()
	c, err := buildkitd.Dial(context.Background(), buildkitd.Endpoint{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	du, err := c.DiskUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, u := range du {
		n += u.Size
	}
	return n
}

// A cleanup that keeps nothing frees BuildKit's disk, and the next build
// still succeeds (cold). On a buildkitd of its own: a cleanup of the
// stack's would leave every test after it cold.
func TestCleanupFreesSpace(t *testing.T) {
	t.Parallel()
	d := startPoolDaemon(t)
	c, addr := startServerAddr(t, func(cfg *server.Config) {
		cfg.BuildKit = buildkitd.Endpoint{Address: d.addr}
		cfg.Cleanup = server.CleanupPolicy{KeepDuration: 0, KeepStorage: 0}
	})
	// A program that needs no module: what the daemon holds is the
	// builder's and the base image's, and the build's own steps.
	small := func(tag string) {
		t.Helper()
		repo := newRepo(t, noModuleFiles(t.Name()+" "+tag, ""))
		requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, tag)}))
	}
	small("before")
	before := diskUsage(t, d.addr)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := buildv1.NewAdminServiceClient(conn).Cleanup(t.Context(), &buildv1.CleanupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	after := diskUsage(t, d.addr)
	t.Logf("disk usage %d -> %d bytes; cleanup says %d bytes in %d records", before, after, resp.BuildkitBytesFreed, resp.BuildkitRecordsPruned)
	if resp.BuildkitBytesFreed <= 0 || resp.BuildkitRecordsPruned <= 0 || after >= before {
		t.Errorf("cleanup freed nothing: %v (disk usage %d -> %d)", resp, before, after)
	}
	small("after")
}
