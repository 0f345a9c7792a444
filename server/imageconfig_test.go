package server

import (
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The builder's and base image's configs are asked of BuildKit once per
// digest and tenant: a second build of the tenant reuses them, another
// tenant's build and a build with registry credentials of its own do not.
func TestImageConfigsResolvedOncePerDigest(t *testing.T) {
	fk := newFakeBuildKit()
	e := newLifecycleServer(t, fk, nil)
	resolvedBy := func(tag string) int {
		fk.mu.Lock()
		defer fk.mu.Unlock()
		return len(fk.resolved[tag])
	}
	for _, tag := range []string{"v1", "v2"} {
		e.watch(t, e.start(t, imageRequest(tag)).GetBuildId())
	}
	if n := resolvedBy("registry.example/app:v1"); n != 2 {
		t.Fatalf("the first build resolved %d image configs, want 2 (builder and base)", n)
	}
	if n := resolvedBy("registry.example/app:v2"); n != 0 {
		t.Errorf("the second build resolved %d image configs, want 0 (remembered)", n)
	}
	withCreds := imageRequest("v3")
	withCreds.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "registry.example", Username: "u", Password: "p"}}
	e.watch(t, e.start(t, withCreds).GetBuildId())
	if n := resolvedBy("registry.example/app:v3"); n != 2 {
		t.Errorf("a build with its own registry credentials resolved %d image configs, want 2", n)
	}
}
