//go:build integration

package integration

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// flakyRegistry is the stack's registry behind a proxy that answers 429
// Too Many Requests, with a Retry-After, to the first limited manifest
// pushes (and, meanwhile, to the API root, as a rate limiter does). It
// signs every request in with the stack registry's credentials, so builds
// push to it with none of their own.
type flakyRegistry struct {
	addr    string
	limited atomic.Int64 // manifest pushes still refused
	refused atomic.Int64 // manifest pushes refused so far
}

func startFlakyRegistry(t *testing.T, retryAfter string) *flakyRegistry {
	t.Helper()
	st := loadStack(t)
	pw, err := os.ReadFile(os.Getenv("REGISTRY_PASSWORD_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	up := &url.URL{Scheme: "http", Host: st.RegistryAddr}
	rp := httputil.NewSingleHostReverseProxy(up)
	inner := rp.Director
	rp.Director = func(r *http.Request) {
		inner(r)
		// r.Host stays the proxy's: the registry builds its upload
		// locations from it, so they lead back through the proxy.
		r.SetBasicAuth(os.Getenv("REGISTRY_USER"), strings.TrimSpace(string(pw)))
	}
	f := &flakyRegistry{}
	manifest := regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limited := f.limited.Load() > 0
		switch {
		case limited && r.Method == http.MethodPut && manifest.MatchString(r.URL.Path):
			f.limited.Add(-1)
			f.refused.Add(1)
			fallthrough
		case limited && r.URL.Path == "/v2/":
			w.Header().Set("Retry-After", retryAfter)
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
			return
		}
		rp.ServeHTTP(w, r)
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	f.addr = lis.Addr().String()
	return f
}

// A push refused with 429 more often than BuildKit's own retries bear runs
// again after the registry's Retry-After and succeeds; a registry that keeps refusing ends the build FAILED with code
// Unavailable, REGISTRY_UNAVAILABLE, naming the registry, after the
// service's attempts (4).
func TestRegistryTroubleRetried(t *testing.T) {
	t.Parallel()
	c := startServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	reg := startFlakyRegistry(t, "3")

	t.Run("passing", func(t *testing.T) {
		// A run of the build meets 5 refusals before BuildKit gives up
		// (its own tries of the push): the sixth is the service's second
		// run's, whose next try is let through.
		reg.limited.Store(6)
		o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: reg.addr + "/it/retry:passing"})
		res := requireSuccess(t, o)
		if !strings.HasPrefix(res.GetImage(), reg.addr+"/it/retry@sha256:") {
			t.Errorf("image %s", res.GetImage())
		}
		var warnings []string
		for _, e := range o.events {
			if w := e.GetWarning().GetShort(); strings.Contains(w, "answered 429 Too Many Requests") {
				warnings = append(warnings, w)
			}
		}
		if got := reg.refused.Load(); got != 6 || len(warnings) != 1 {
			t.Fatalf("%d pushes refused, %d retry warnings (%q); want 6 and 1", got, len(warnings), warnings)
		}
		// The first pause is the registry's 3 s (more than the service's
		// own first 2 s).
		if want := "the registry " + reg.addr + " answered 429 Too Many Requests (toomanyrequests: slow down): trying again in 3s (attempt 2 of 4)"; warnings[0] != want {
			t.Errorf("first warning %q, want %q", warnings[0], want)
		}
	})

	t.Run("sustained", func(t *testing.T) {
		reg.refused.Store(0)
		reg.limited.Store(1000)
		defer reg.limited.Store(0)
		start := time.Now()
		files := sampleFiles(t)
		files["main.go"] += "\nvar _ = \"sustained\"\n"
		sha := repo.commit("main", "sustained", files)
		o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: sha, ImageTag: reg.addr + "/it/retry:sustained"})
		be := o.buildErr()
		if be == nil {
			t.Fatalf("the build did not fail: %v", o.err)
		}
		if codes.Code(be.GetCode()) != codes.Unavailable || be.GetReason() != "REGISTRY_UNAVAILABLE" ||
			!strings.Contains(be.GetMessage(), "the registry "+reg.addr+" is unavailable: 4 attempts failed, the last on 429 Too Many Requests") {
			t.Fatalf("error %v, want Unavailable, REGISTRY_UNAVAILABLE and the registry named", be)
		}
		t.Logf("%d pushes refused", reg.refused.Load())
		t.Logf("a sustained 429 failed after %v", time.Since(start).Round(time.Millisecond))
	})
}
