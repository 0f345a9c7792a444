//go:build integration

package integration

import (
	"archive/tar"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/llb"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// probeTool is a -toolexec wrapper (for busybox sh) that, when go build
// runs the linker (which runs on every build: Go caches compiled packages
// and replays their output, not links), tries to reach a listener on
// 127.0.0.1 (with busybox nc; its static wget cannot connect anywhere) and
// to write into the module cache, says what happened, marked
// with the listener's port so that no earlier run's output can pass for
// this one's, and then runs the tool.
const probeTool = `
case "$1" in
*/link)
	if echo from-go-build | nc -w 3 127.0.0.1 %[1]d >/dev/null 2>&1; then
		echo "PROBE %[1]d: reached the listener" >&2
	else
		echo "PROBE %[1]d: no network" >&2
	fi
	echo "PROBE %[1]d: nofile $(ulimit -n)" >&2
	if echo "// poisoned" >> /go/pkg/mod/github.com/google/uuid@v1.6.0/uuid.go 2>/dev/null || touch /go/pkg/mod/buildsvc-poison 2>/dev/null; then
		echo "PROBE %[1]d: wrote the module cache" >&2
	else
		echo "PROBE %[1]d: the module cache is read-only" >&2
	fi
	;;
esac
exec "$@"
`

// A build step cannot reach the host's network or change the module cache,
// even for a tenant trusted with -toolexec (a program of the repository's
// choosing runs at build time): the step has the configured ulimits, a
// listener on 127.0.0.1 sees no
// connection, the module cache cannot be written, and another tenant's next
// build of a module from it gets the module as it was.
func TestBuildStepsAreSandboxed(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	_, c := startTenantServer(t, `
tenants:
  tools:
    allow: {build_flags: ["-toolexec"]}
`, func(cfg *server.Config) { cfg.Ulimits = []llb.Ulimit{{Name: "nofile", Soft: 1000, Hard: 1000}} }, "tools", "other")

	files := sampleFiles(t)
	port := lis.Addr().(*net.TCPAddr).Port
	files["tool.sh"] = fmt.Sprintf(probeTool, port)
	repo := newRepo(t, files)
	o := build(t, c["tools"], &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "tools"),
		BuildFlags: []string{"-toolexec=/bin/sh " + llb.SourceDir + "/tool.sh"}})
	requireSuccess(t, o)
	logs := o.logs()
	if !strings.Contains(logs, fmt.Sprintf("PROBE %d: no network", port)) || !strings.Contains(logs, fmt.Sprintf("PROBE %d: the module cache is read-only", port)) {
		t.Errorf("the tool's probes did not fail as they should:\n%s", logs)
	}
	if !strings.Contains(logs, fmt.Sprintf("PROBE %d: nofile 1000", port)) {
		t.Errorf("the step does not have the configured nofile limit of 1000:\n%s", logs)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the listener on 127.0.0.1 saw %d connections from go build", n)
	}

	// Another tenant's build of the same module: as it was.
	res := requireSuccess(t, build(t, c["other"], &buildv1.CreateImageRequest{GitRepo: newRepo(t, sampleFiles(t)).URL,
		GitCommit: "main", ImageTag: tagFor(t, "other")}))
	if out := runEntrypoint(t, pushedImage(t, res.Image)); !strings.HasPrefix(out, sampleOutput) {
		t.Errorf("the other tenant's binary printed %q", out)
	}
}

// A pruned module cache never meets a reused download step: BuildKit reuses
// the download step of an unchanged go.mod, its modules have been pruned
// from the cache, so the compile step (offline) misses them; the server sees
// it, downloads again and the build succeeds.
func TestPrunedModuleCacheIsRefetched(t *testing.T) {
	ns := fmt.Sprintf("prune-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := startServer(t, func(cfg *server.Config) { cfg.CacheNamespace = ns })
	repo := newRepo(t, sampleFiles(t))
	requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "a")}))

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bk, err := buildkitd.Dial(ctx, buildkitd.Endpoint{Address: loadStack(t).BuildKitAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	modCache := llb.GoModCacheID + "-" + ns
	ch := make(chan client.UsageInfo)
	pruned := make(chan int)
	go func() {
		n := 0
		for range ch {
			n++
		}
		pruned <- n
	}()
	// One filter string: BuildKit ORs the strings of a list, and ANDs the
	// terms of one.
	err = bk.Prune(ctx, ch, client.PruneAll, client.WithFilter([]string{
		"type==" + string(client.UsageRecordTypeCacheMount) + ",description~=" + modCache,
	}))
	close(ch)
	if err != nil {
		t.Fatal(err)
	}
	if n := <-pruned; n != 1 {
		t.Fatalf("%d records pruned, want the one cache mount %s", n, modCache)
	}

	files := sampleFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "hello from sampleapp", "hello after the prune", 1)
	repo.commit("main", "new source, same go.mod", files)
	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "b")})
	res := requireSuccess(t, o)
	warned := false
	for _, e := range o.events {
		warned = warned || strings.Contains(e.GetWarning().GetShort(), "downloading them again")
	}
	if !warned || !strings.Contains(o.logs(), "read-only file system") {
		t.Errorf("the build did not meet the pruned cache and download again (warning %v); logs:\n%s", warned, o.logs())
	}
	if out := runEntrypoint(t, pushedImage(t, res.Image)); !strings.HasPrefix(out, "hello after the prune") {
		t.Errorf("binary printed %q", out)
	}
}

// With a build user, go build runs as that user (a -toolexec probe says
// its uid), the build succeeds, and the binary in the image is root's.
func TestBuildAsNonRootUser(t *testing.T) {
	_, c := startTenantServer(t, `
tenants:
  tools:
    allow: {build_flags: ["-toolexec"]}
`, func(cfg *server.Config) { cfg.BuildUser = "65534:65534" }, "tools")
	files := sampleFiles(t)
	files["uid.sh"] = "case \"$1\" in */link) echo \"PROBE uid $(id -u):$(id -g)\" >&2 ;; esac\nexec \"$@\"\n"
	repo := newRepo(t, files)
	o := build(t, c["tools"], &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "nobody"),
		BuildFlags: []string{"-toolexec=/bin/sh " + llb.SourceDir + "/uid.sh"}})
	res := requireSuccess(t, o)
	if !strings.Contains(o.logs(), "PROBE uid 65534:65534") {
		t.Errorf("go build did not run as 65534:65534:\n%s", o.logs())
	}
	img := pushedImage(t, res.Image)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	forEachFile(t, layers[len(layers)-1], func(h *tar.Header) {
		if strings.HasSuffix(h.Name, "/"+filepath.Base(repo.URL[:len(repo.URL)-len(".git")])) && h.Typeflag == tar.TypeReg {
			found = true
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("the binary %s is owned by %d:%d, want root's", h.Name, h.Uid, h.Gid)
			}
		}
	})
	if !found {
		t.Error("the binary is not in the image's last layer")
	}
	if out := runEntrypoint(t, img); !strings.HasPrefix(out, sampleOutput) {
		t.Errorf("binary printed %q", out)
	}
}
