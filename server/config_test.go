package server

import (
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/policy"
)

// nopStore is enough of a store for config checks.
type nopStore struct{ history.Store }

func TestCacheIDs(t *testing.T) {
	tests := []struct {
		ns, tenant      string
		perTenantMod    bool
		ok              bool
		wantMod, wantGo string
	}{
		{"", "", false, true, "", ""}, // llb's defaults
		{"team-a_1.x", "", false, true, "buildsvc-gomodcache-team-a_1.x", "buildsvc-gocache-team-a_1.x"},
		{"", "dev", false, true, "", "buildsvc-gocache-tenant-dev"},
		{"", "dev", true, true, "buildsvc-gomodcache-tenant-dev", "buildsvc-gocache-tenant-dev"},
		{"ns", "dev", false, true, "buildsvc-gomodcache-ns", "buildsvc-gocache-ns-tenant-dev"},
		{"ns", "dev", true, true, "buildsvc-gomodcache-ns-tenant-dev", "buildsvc-gocache-ns-tenant-dev"},
		{"a/b", "", false, false, "", ""},
		{"a b", "", false, false, "", ""},
		{"é", "", false, false, "", ""},
		{strings.Repeat("a", 64), "", false, true, "buildsvc-gomodcache-" + strings.Repeat("a", 64), "buildsvc-gocache-" + strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), "", false, false, "", ""},
	}
	for _, tt := range tests {
		c, err := Config{Store: nopStore{}, BuildKit: buildkitd.Endpoint{Address: "unix:///run/buildkitd.sock"},
			CacheNamespace: tt.ns, PerTenantModuleCache: tt.perTenantMod}.withDefaults()
		if (err == nil) != tt.ok {
			t.Errorf("namespace %q: err = %v, want ok %v", tt.ns, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if mod, build := c.cacheIDs(tt.tenant); mod != tt.wantMod || build != tt.wantGo {
			t.Errorf("namespace %q, tenant %q, per-tenant modules %v: ids %q, %q; want %q, %q",
				tt.ns, tt.tenant, tt.perTenantMod, mod, build, tt.wantMod, tt.wantGo)
		}
	}
}

// A tenants file may only name registry credentials the server has.
func TestTenantRegistryCredentialsMustExist(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		ok   bool
	}{
		{"tenants: {a: {registry_credentials: push}}", true},
		{"tenants: {a: {registry_credentials: none}}", true},
		{"defaults: {registry_credentials: push}", true},
		{"tenants: {a: {registry_credentials: other}}", false},
		{"defaults: {registry_credentials: other}", false},
	} {
		pols, err := policy.ParsePolicies([]byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Config{Store: nopStore{}, BuildKit: buildkitd.Endpoint{Address: "unix:///run/buildkitd.sock"},
			Tenants: pols, RegistryCredentials: map[string]string{"push": "/etc/buildsvc/push"}}.withDefaults()
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok %v", tt.yaml, err, tt.ok)
		}
	}
}
