package server

import (
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/llb"
)

func TestRepositoryOwner(t *testing.T) {
	for _, tt := range []struct{ repo, want string }{
		{"https://github.com/acme/app.git", "github.com/acme"},
		{"https://GitHub.com/acme/other", "github.com/acme"},
		{"ssh://git@git.corp:2222/team/svc.git", "git.corp:2222/team"},
		{"git@github.com:acme/app.git", "github.com/acme"},
		{"git://127.0.0.1:19418/sample.git", "127.0.0.1:19418/sample.git"},
	} {
		got, err := repositoryOwner(tt.repo)
		if err != nil || got != tt.want {
			t.Errorf("repositoryOwner(%q) = %q, %v; want %q", tt.repo, got, err, tt.want)
		}
	}
}

func TestStoreScope(t *testing.T) {
	if got := storeScope("Buildsvc-gocache-tenant-dev"); got != "buildsvc-gocache-tenant-dev" {
		t.Errorf("short id: %q", got)
	}
	long := llb.GoBuildCacheID + "-" + strings.Repeat("n", 40) + "-tenant-" + strings.Repeat("t", 30)
	a, b := storeScope(long), storeScope(long+"x")
	if len(a) > maxStoreScope || len(b) > maxStoreScope || a == b {
		t.Errorf("long ids: %q and %q (want distinct, at most %d)", a, b, maxStoreScope)
	}
}

// TestCacheScopeRepositoryOwner: with the owner scope, two owners' builds
// get distinct module and build caches, one owner's repositories share
// them, and the service scope keeps today's ids.
func TestCacheScopeRepositoryOwner(t *testing.T) {
	ids := func(scope, repo string) [2]string {
		s := &Server{cfg: Config{CacheScope: scope}}
		m, b := s.buildCacheIDs("", &request{Repo: repo})
		return [2]string{m, b}
	}
	if got := ids(CacheScopeService, "https://github.com/acme/app"); got != [2]string{"", ""} {
		t.Errorf("service scope: %q, want the default ids", got)
	}
	a1 := ids(CacheScopeRepositoryOwner, "https://github.com/acme/app")
	a2 := ids(CacheScopeRepositoryOwner, "https://github.com/acme/other.git")
	e := ids(CacheScopeRepositoryOwner, "https://github.com/evil/app")
	if a1 != a2 {
		t.Errorf("one owner, two ids: %q and %q", a1, a2)
	}
	if a1[0] == e[0] || a1[1] == e[1] || a1[0] == a1[1] {
		t.Errorf("owners share a cache: %q and %q", a1, e)
	}
	if !strings.HasPrefix(a1[0], llb.GoModCacheID+"-owner-") || !strings.HasPrefix(a1[1], llb.GoBuildCacheID+"-owner-") {
		t.Errorf("ids %q", a1)
	}
	if _, err := (Config{CacheScope: "tenant"}).withDefaults(); err == nil {
		t.Error("an unknown cache scope was accepted")
	}
}
