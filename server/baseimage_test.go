package server

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"

	"github.com/buildsvc/buildsvc/egress"
)

// pushRandomImage pushes a random image to tag and returns the tag and the
// image's digest.
func pushRandomImage(t *testing.T, tag string) (name.Tag, v1.Hash) {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dgst, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, dgst
}

// A base image is asked for before the build is queued: one that exists is
// pinned to its digest, one that does not is NotFound naming base_image,
// and a registry the host policy refuses is left to the build.
func TestPinBaseImage(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ref, dgst := pushRandomImage(t, host+"/base/static:1")
	s := &Server{}
	loopback := egress.Allowance{Loopback: true, AnyPort: true}
	ctx := context.Background()

	got, err := s.pinBaseImage(ctx, ref.Name(), loopback, nil, nil)
	if err != nil || got != ref.Name()+"@"+dgst.String() {
		t.Errorf("pin %s = %q, %v; want it pinned to %s", ref, got, err, dgst)
	}
	pinned := host + "/base/static@" + dgst.String()
	if got, err := s.pinBaseImage(ctx, pinned, egress.Allowance{}, nil, nil); err != nil || got != pinned {
		t.Errorf("an image pinned already: %q, %v", got, err)
	}
	_, err = s.pinBaseImage(ctx, host+"/base/missing:1", loopback, nil, nil)
	if nf, ok := errors.AsType[*notFoundField](err); !ok || nf.field != "base_image" || errorCode(err) != codes.NotFound {
		t.Errorf("a missing image: %v (code %v)", err, errorCode(err))
	}
	got, err = s.pinBaseImage(ctx, ref.Name(), egress.Allowance{}, nil, nil)
	if _, ok := errors.AsType[baseUnchecked](err); !ok || got != ref.Name() {
		t.Errorf("a registry the host policy refuses: %q, %v", got, err)
	}
	var refused *egress.Refused
	if !errors.As(err, &refused) {
		t.Errorf("the refusal is not the host policy's: %v", err)
	}
}
