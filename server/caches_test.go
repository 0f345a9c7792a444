package server

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/session/secrets"
	"github.com/moby/buildkit/solver/pb"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/modproxy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// fakeProxy is a ModuleProxy that hands out fixed credentials and stats.
type fakeProxy struct {
	mu             sync.Mutex
	scopes         []string
	forgotten      []string
	fetchesPrivate bool
	allowed        []string // "build patterns netrc" of AllowPrivate
}

func (p *fakeProxy) Credentials(scope, buildID string) (string, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scopes = append(p.scopes, scope)
	return "b-" + buildID, "pw-" + scope
}

func (p *fakeProxy) BuildStats(string) modproxy.Stats {
	return modproxy.Stats{Hits: 5, Misses: 2, BytesFromCache: 500, BytesFromUpstream: 200, UpstreamTime: time.Second}
}

func (p *fakeProxy) FetchesPrivate() bool { return p.fetchesPrivate }

func (p *fakeProxy) AllowPrivate(id string, priv modproxy.Private) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.allowed = append(p.allowed, id+" "+priv.Patterns+" "+string(priv.Netrc))
	return nil
}

func (p *fakeProxy) Forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgotten = append(p.forgotten, id)
}

// fakeBuilders hands out one client under a name and counts releases.
type fakeBuilders struct {
	c        BuildKitClient
	released chan string
}

func (f *fakeBuilders) Acquire(_ context.Context, req BuilderRequest) (*Builder, error) {
	return &Builder{Client: f.c, Name: "fake " + req.BuildID,
		Release: func(context.Context, bool) error { f.released <- req.BuildID; return nil }}, nil
}

// TestBuildWithCaches: a build on a server with a module proxy, a
// build-cache store and builders of its own runs on the builder it got
// (released after it), gets the proxy's credential in its netrc secret for
// the proxy's host and port, and reports the caches' use in its result;
// the proxy forgets its stats then.
func TestBuildWithCaches(t *testing.T) {
	fk := newFakeBuildKit()
	proxy := &fakeProxy{}
	store, err := buildcache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	builders := &fakeBuilders{c: fk, released: make(chan string, 1)}
	e := newLifecycleServer(t, newFakeBuildKit(), func(c *Config) {
		c.ModuleProxy, c.ModuleProxyURL = proxy, "https://proxy.internal:8443"
		c.BuildCache = store
		c.Builders = builders
	})
	id := e.start(t, imageRequest("caches")).GetBuildId()
	evs := e.watch(t, id)
	res := evs[len(evs)-1].GetResult()
	if res.GetBuilder() != "fake "+id {
		t.Errorf("builder %q, want the one Builders gave", res.GetBuilder())
	}
	u := res.GetCacheUsage()
	if u.GetModuleHits() != 5 || u.GetModuleMisses() != 2 || u.GetModuleBytesFetched() != 200 || u.GetModuleFetchTime().AsDuration() != time.Second ||
		u.GetBuildCacheTime() == nil {
		t.Errorf("cache usage %v, want the proxy's stats and the store's", u)
	}
	select {
	case got := <-builders.released:
		if got != id {
			t.Errorf("released %s, want %s", got, id)
		}
	case <-time.After(10 * time.Second):
		t.Error("the builder was not released")
	}
	proxy.mu.Lock()
	scopes, forgotten := proxy.scopes, proxy.forgotten
	proxy.mu.Unlock()
	if len(scopes) != 1 || scopes[0] != storeScope("buildsvc-gomodcache") || len(forgotten) != 1 || forgotten[0] != id {
		t.Errorf("proxy scopes %v, forgotten %v", scopes, forgotten)
	}
	// The netrc secret names the proxy by host and port, with the build's
	// credential, before any other entry.
	fk.mu.Lock()
	sessions := fk.sessions
	fk.mu.Unlock()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	var netrc string
	for _, a := range sessions[0] {
		if ss, ok := a.(secrets.SecretsServer); ok {
			r, err := ss.GetSecret(context.Background(), &secrets.GetSecretRequest{ID: "buildsvc.netrc"})
			if err == nil {
				netrc = string(r.GetData())
			}
		}
	}
	if want := "machine proxy.internal:8443\nlogin b-" + id + "\npassword pw-" + storeScope("buildsvc-gomodcache") + "\n"; !strings.HasPrefix(netrc, want) {
		t.Errorf("netrc %q, want it to start with %q", netrc, want)
	}
}

// downloadEnv is the environment of the download step of def.
func downloadEnv(t *testing.T, def *pb.Definition) map[string]string {
	t.Helper()
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.Unmarshal(dt); err != nil {
			t.Fatal(err)
		}
		if e := op.GetExec(); e != nil && slices.Equal(e.Meta.Args, []string{"go", "mod", "download"}) {
			env := map[string]string{}
			for _, kv := range e.Meta.Env {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			return env
		}
	}
	t.Fatal("no download step")
	return nil
}

// With a module proxy that fetches private modules, a build with
// GOPRIVATE modules asks the proxy for them too (GONOPROXY=none): the
// proxy is allowed them with the build's module credentials (not its own
// entry). A request that names GONOPROXY modules, or a proxy that cannot
// fetch them, leaves them to the download step as before.
func TestPrivateModulesThroughTheProxy(t *testing.T) {
	for _, tc := range []struct {
		name           string
		fetchesPrivate bool
		gonoproxy      string
		wantAllowed    bool
	}{
		{"through the proxy", true, "", true},
		{"the request names GONOPROXY", true, "git.internal.example/vendored", false},
		{"a proxy without go or git", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fk := newFakeBuildKit()
			proxy := &fakeProxy{fetchesPrivate: tc.fetchesPrivate}
			e := newLifecycleServer(t, fk, func(c *Config) {
				c.ModuleProxy, c.ModuleProxyURL = proxy, "https://proxy.internal:8443"
			})
			req := imageRequest("private")
			req.Goprivate, req.Gonoproxy = "git.internal.example", tc.gonoproxy
			req.ModuleCredentials = []*buildv1.ModuleCredentials{{Host: "git.internal.example", Username: "u", Password: "module-secret"}}
			id := e.start(t, req).GetBuildId()
			evs := e.watch(t, id)
			if evs[len(evs)-1].GetResult() == nil {
				t.Fatalf("build failed: %v", evs[len(evs)-1])
			}
			proxy.mu.Lock()
			allowed := proxy.allowed
			proxy.mu.Unlock()
			fk.mu.Lock()
			env := downloadEnv(t, fk.pbDefs[len(fk.pbDefs)-1])
			fk.mu.Unlock()
			if !tc.wantAllowed {
				if len(allowed) != 0 || env["GONOPROXY"] == "none" {
					t.Errorf("allowed %q, GONOPROXY %q: want the private modules left to the download step", allowed, env["GONOPROXY"])
				}
				return
			}
			if len(allowed) != 1 || !strings.HasPrefix(allowed[0], id+" git.internal.example machine git.internal.example") ||
				!strings.Contains(allowed[0], "module-secret") || strings.Contains(allowed[0], "proxy.internal") {
				t.Errorf("allowed %q, want the build's GOPRIVATE and its module credentials only", allowed)
			}
			if env["GONOPROXY"] != "none" || env["GOPRIVATE"] != "git.internal.example" || !strings.HasPrefix(env["GOPROXY"], "https://proxy.internal:8443/") {
				t.Errorf("download env GOPROXY %q GOPRIVATE %q GONOPROXY %q, want the proxy for every module", env["GOPROXY"], env["GOPRIVATE"], env["GONOPROXY"])
			}
		})
	}
}
