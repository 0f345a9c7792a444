package modproxy

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGoModDownload drives the proxy with the real go command, step after step on one
// cache: a cold download, a warm one from an empty module cache, a wrong credential and
// a second scope.
func TestGoModDownload(t *testing.T) {
	a := makeModule(t, "example.test/a", "v1.0.0", "a")
	b := makeModule(t, "example.test/b", "v1.1.0", "b")
	up := newUpstream(t, a, b)
	// The default GOSUMDB stays: GONOSUMDB must reach the fetcher, or it would try
	// sum.golang.org for these modules and fail.
	s := serve(t, WithUpstream(up.URL), WithGoNoSumDB("example.test"))
	dir := mainModule(t, a, b)

	netrc := func(scope, build string) []byte {
		n, err := s.Netrc(s.host(), scope, build)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	steps := []struct {
		name     string
		scope    string
		build    string
		netrc    []byte
		viaEnv   bool   // netrc named by $NETRC instead of $HOME/.netrc
		wantErr  string // in the go command's output
		upstream bool   // whether the step may reach upstream
		check    func(t *testing.T, st Stats)
	}{
		{
			name: "cold", scope: "default", build: "b1", netrc: netrc("default", "b1"), upstream: true,
			check: func(t *testing.T, st Stats) {
				if st.Misses == 0 || st.BytesFromUpstream == 0 || st.UpstreamTime <= 0 {
					t.Errorf("cold stats = %+v, want misses, upstream bytes and time", st)
				}
			},
		},
		{
			name: "warm", scope: "default", build: "b2", netrc: netrc("default", "b2"), viaEnv: true, upstream: false,
			check: func(t *testing.T, st Stats) {
				if st.Misses != 0 || st.Hits < 4 || st.BytesFromCache < int64(len(a.zip)+len(b.zip)) || st.BytesFromUpstream != 0 {
					t.Errorf("warm stats = %+v, want only hits, at least both zips from cache", st)
				}
			},
		},
		{
			name: "credential of another scope", scope: "default", build: "b3", netrc: netrc("other", "b3"),
			wantErr: "401 Unauthorized",
			check: func(t *testing.T, st Stats) {
				if st != (Stats{}) {
					t.Errorf("unauthorized build has stats %+v", st)
				}
			},
		},
		{
			name: "other scope does not see default's cache", scope: "other", build: "b4", netrc: netrc("other", "b4"), upstream: true,
			check: func(t *testing.T, st Stats) {
				if st.Misses == 0 {
					t.Errorf("scope other stats = %+v, want misses", st)
				}
			},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before, _ := up.requests("")
			refused := testutil.ToFloat64(s.metrics.requests.WithLabelValues(resultUnauthorized))
			env := s.goEnv(t, step.scope, step.netrc, "GONOSUMDB=example.test")
			if step.viaEnv {
				file := filepath.Join(t.TempDir(), "netrc")
				if err := os.WriteFile(file, step.netrc, 0o600); err != nil {
					t.Fatal(err)
				}
				env = append(s.goEnv(t, step.scope, nil, "GONOSUMDB=example.test"), "NETRC="+file)
			}
			got, out, err := goModDownload(t, dir, env)
			after, _ := up.requests("")
			// The go command sends netrc credentials with its first request, unchallenged.
			if refusedNow := testutil.ToFloat64(s.metrics.requests.WithLabelValues(resultUnauthorized)); (refusedNow > refused) != (step.wantErr != "") {
				t.Errorf("unauthorized requests %v -> %v", refused, refusedNow)
			}
			if step.wantErr != "" {
				if err == nil || !strings.Contains(out, step.wantErr) {
					t.Fatalf("go mod download: err=%v, want failure with %q; output:\n%s", err, step.wantErr, out)
				}
			} else {
				if err != nil {
					t.Fatalf("go mod download: %v\n%s", err, out)
				}
				if len(got) != 2 {
					t.Fatalf("downloaded %d modules, want 2:\n%s", len(got), out)
				}
				for _, d := range got {
					if d.Error != "" || d.Zip == "" {
						t.Errorf("%s@%s: error %q, zip %q", d.Path, d.Version, d.Error, d.Zip)
					}
				}
			}
			if reached := after > before; reached != step.upstream {
				t.Errorf("upstream requests %d -> %d; want upstream reached = %v", before, after, step.upstream)
			}
			t.Logf("stats of %s: %+v", step.build, s.BuildStats(step.build))
			step.check(t, s.BuildStats(step.build))
		})
	}

	// Metrics follow.
	all, _ := up.requests("")
	if got := testutil.ToFloat64(s.metrics.upstreamRequests); int(got) != all {
		t.Errorf("upstream_requests_total = %v, upstream saw %d", got, all)
	}
	for _, result := range []string{resultHit, resultMiss, resultUnauthorized} {
		if got := testutil.ToFloat64(s.metrics.requests.WithLabelValues(result)); got == 0 {
			t.Errorf("requests_total{result=%q} = 0", result)
		}
	}
	for _, src := range []string{"cache", "upstream"} {
		if got := testutil.ToFloat64(s.metrics.bytes.WithLabelValues(src)); got == 0 {
			t.Errorf("bytes_total{source=%q} = 0", src)
		}
	}
	gauge := testutil.ToFloat64(s.metrics.cacheBytes) // before DiskUsage recounts it
	usage, entries, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	if entries != 12 { // 2 modules x 3 files x 2 scopes
		t.Errorf("cache entries = %d, want 12", entries)
	}
	if int64(gauge) != usage || usage == 0 {
		t.Errorf("cache_bytes = %v, disk usage %d", gauge, usage)
	}
	if n, err := testutil.GatherAndCount(s.reg); err != nil || n == 0 {
		t.Errorf("registry: %d metrics, %v", n, err)
	}

	s.Forget("b1")
	if st := s.BuildStats("b1"); st != (Stats{}) {
		t.Errorf("after Forget: %+v", st)
	}
}

// TestAuth checks every way a request can be refused, and that the refusal carries the
// challenge the go command expects.
func TestAuth(t *testing.T) {
	a := makeModule(t, "example.test/a", "v1.0.0", "a")
	up := newUpstream(t, a)
	s := serve(t, WithUpstream(up.URL), WithGoNoSumDB("example.test"))
	user, pass := s.Credentials("tenant-a", "42")
	otherUser, otherPass := s.Credentials("tenant-b", "42")
	const mod = "/example.test/a/@v/v1.0.0.mod"

	tests := []struct {
		name       string
		path       string
		user, pass string
		want       int
	}{
		{"valid", "/tenant-a" + mod, user, pass, http.StatusOK},
		{"no credentials", "/tenant-a" + mod, "", "", http.StatusUnauthorized},
		{"wrong password", "/tenant-a" + mod, user, pass[:len(pass)-1] + "0", http.StatusUnauthorized},
		{"credential of another scope", "/tenant-a" + mod, otherUser, otherPass, http.StatusUnauthorized},
		{"password of another build", "/tenant-a" + mod, "b-43", pass, http.StatusUnauthorized},
		{"username without prefix", "/tenant-a" + mod, "42", pass, http.StatusUnauthorized},
		{"invalid scope", "/Tenant-A" + mod, user, pass, http.StatusNotFound},
		{"no path after scope", "/tenant-a", user, pass, http.StatusNotFound},
		{"unknown version", "/tenant-a/example.test/a/@v/v9.9.9.mod", user, pass, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(s.metrics.requests.WithLabelValues(resultUnauthorized))
			code, hdr, body := s.get(t, tt.path, tt.user, tt.pass)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			after := testutil.ToFloat64(s.metrics.requests.WithLabelValues(resultUnauthorized))
			if tt.want == http.StatusUnauthorized {
				if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("WWW-Authenticate = %q", hdr.Get("WWW-Authenticate"))
				}
				if after != before+1 {
					t.Errorf("unauthorized counter %v -> %v", before, after)
				}
			}
			if tt.want == http.StatusOK && body != string(a.mod) {
				t.Errorf("body %q, want %q", body, a.mod)
			}
		})
	}
	if st := s.BuildStats("42"); st.Misses+st.Hits != 1 || st.Errors != 1 {
		t.Errorf("stats of build 42 = %+v, want one success and one error", st)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := s.get(t, "/tenant-a"+mod, user, pass); code != http.StatusServiceUnavailable {
		t.Errorf("after Close: status %d, want 503", code)
	}
}
