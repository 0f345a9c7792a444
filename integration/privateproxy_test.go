//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// TestPrivateModuleThroughTheProxy: the app imports a GOPRIVATE module
// from the stack's HTTPS git host (token auth, internal CA). On a server
// with the module proxy and ephemeral builders, the first build's proxy
// fetches it from the host with the build's token (under the build's host
// policy) and keeps it in the build's scope; the second build, a new
// commit on a brand-new buildkitd, gets it from the proxy's cache: the
// proxy fetched nothing. The token is in no event, record, log, history
// byte, image or file of the proxy's.
func TestPrivateModuleThroughTheProxy(t *testing.T) {
	t.Parallel() // on buildkitds of its own
	p := loadPrivate(t)
	w := startWarmStack(t)
	if !w.proxy.FetchesPrivate() {
		t.Fatal("the proxy finds no go or git on PATH")
	}
	ns := cacheNamespace(t)
	ts := startTestServer(t, func(c *server.Config) {
		w.configure(t, nil)(c)
		c.CacheNamespace = ns
	})
	app := readDir(t, "../testdata/privateapp")
	app["main.go"] += fmt.Sprintf("\n// %s %d\n", t.Name(), time.Now().UnixNano())
	src := newRepoIn(t, app, "", p.Dir, p.HTTPSURL)
	req := &buildv1.CreateImageRequest{
		GitRepo: src.URL, ImageTag: tagFor(t, "private-cold"),
		GitCredentials: &buildv1.GitCredentials{Password: p.Token},
		Goprivate:      "127.0.0.1",
	}
	o1 := build(t, ts.Client, req)
	r1 := requireSuccess(t, o1)
	u1 := r1.GetCacheUsage()
	if u1.GetModuleMisses() == 0 || u1.GetModuleBytesFetched() == 0 {
		t.Errorf("first build: the proxy fetched nothing: %v", u1)
	}
	// The proxy keeps the private module in the build's scope.
	var zips []string
	_ = filepath.WalkDir(filepath.Join(w.proxyDir, "scopes"), func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, filepath.Join("privmod.git", "@v", "v1.0.0.zip")) {
			zips = append(zips, path)
		}
		return nil
	})
	if len(zips) != 1 {
		t.Errorf("the proxy's cache has %d copies of the private module's zip (%v), want 1", len(zips), zips)
	}

	app["main.go"] += "\n// the second commit\n"
	req2 := cloneRequest(req)
	req2.GitCommit = src.commit("main", "second", app)
	req2.ImageTag = tagFor(t, "private-warm")
	o2 := build(t, ts.Client, req2)
	r2 := requireSuccess(t, o2)
	u2 := r2.GetCacheUsage()
	t.Logf("first build: %v\nsecond build: %v", u1, u2)
	if u2.GetModuleMisses() != 0 || u2.GetModuleBytesFetched() != 0 || u2.GetModuleHits() == 0 {
		t.Errorf("second build on a new builder: want the private module from the proxy's cache, got %v", u2)
	}
	if r1.GetBuilder() == r2.GetBuilder() {
		t.Errorf("both builds ran on %q", r1.GetBuilder())
	}
	if out := runEntrypoint(t, pushedImage(t, r2.Image)); !strings.Contains(out, "privateapp: hello from privmod") {
		t.Errorf("binary printed %q", out)
	}

	outputs := map[string][]byte{}
	for i, o := range []outcome{o1, o2} {
		outputs[fmt.Sprintf("build %d's events", i+1)] = eventsText(o.events)
		info, err := ts.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: o.events[0].GetBuildId()})
		if err != nil {
			t.Fatal(err)
		}
		outputs[fmt.Sprintf("build %d's record", i+1)], _ = protojson.Marshal(info)
	}
	outputs["image"] = imageBytes(t, pushedImage(t, r2.Image))
	ts.Stop()
	outputs["server log"] = []byte(ts.Log.String())
	hist, err := os.ReadFile(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs["history file"] = hist
	_ = filepath.WalkDir(w.proxyDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if dt, err := os.ReadFile(path); err == nil {
				outputs["the proxy's "+path] = dt
			}
		}
		return nil
	})
	for where, text := range outputs {
		if bytes.Contains(text, []byte(p.Token)) {
			t.Errorf("%s holds the git token", where)
		}
	}
}
