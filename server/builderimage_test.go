package server

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"google.golang.org/grpc/codes"

	"github.com/buildsvc/buildsvc/egress"
)

// The builder image is asked for before the build is queued, like the base
// image: one that exists is pinned and remembered (its registry is asked
// once per builderTTL), one that does not is NotFound naming
// builder_image, and a missing one is asked again next time.
func TestPinBuilderImage(t *testing.T) {
	var manifestRequests atomic.Int64
	regHandler := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodHead {
			manifestRequests.Add(1)
		}
		regHandler.ServeHTTP(w, r)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ref, dgst := pushRandomImage(t, host+"/builder/go:1")
	manifestRequests.Store(0) // remote.Write asked too
	loopback := egress.Allowance{Loopback: true, AnyPort: true}
	ctx := context.Background()

	s := &Server{cfg: Config{BuilderImage: ref.Name()}}
	for range 3 {
		got, err := s.pinBuilderImage(ctx, loopback, nil, nil)
		if err != nil || got != ref.Name()+"@"+dgst.String() {
			t.Fatalf("pin builder = %q, %v; want it pinned to %s", got, err, dgst)
		}
	}
	if n := manifestRequests.Load(); n != 1 {
		t.Errorf("the registry was asked %d times for the builder, want once", n)
	}

	missing := &Server{cfg: Config{BuilderImage: host + "/builder/missing:1"}}
	for range 2 {
		_, err := missing.pinBuilderImage(ctx, loopback, nil, nil)
		nf, ok := errors.AsType[*notFoundField](err)
		if !ok || nf.field != "builder_image" || errorCode(err) != codes.NotFound || !strings.Contains(err.Error(), "--builder-image") {
			t.Fatalf("a missing builder: %v (code %v)", err, errorCode(err))
		}
	}
	if n := manifestRequests.Load(); n != 3 {
		t.Errorf("a missing builder was remembered: %d manifest requests, want 3", n)
	}
}
