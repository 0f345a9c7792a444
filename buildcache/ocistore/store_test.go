package ocistore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildsvc/buildsvc/buildcache"
)

func id(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// newStore is a Store on an in-process registry (go-containerregistry's
// pkg/registry): a unit test of this package's own logic.
func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	st, err := New(u.Host+"/buildsvc/gocache", remote.WithTransport(srv.Client().Transport))
	if err != nil {
		t.Fatal(err)
	}
	return st, u.Host
}

func read(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	defer rc.Close()
	dt, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(dt)
}

func TestPutGetOpen(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	body := "compiled package"
	before := time.Now().Add(-time.Second)
	if err := st.Put(ctx, "tenant-a", id("action"), id(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	e, err := st.GetAction(ctx, "tenant-a", id("action"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.OutputID, id(body)) || e.Size != int64(len(body)) || e.Time.Before(before) {
		t.Errorf("entry = %+v", e)
	}
	rc, size, err := st.OpenOutput(ctx, "tenant-a", e.OutputID)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, rc); got != body || size != int64(len(body)) {
		t.Errorf("output = %q (%d bytes), want %q", got, size, body)
	}
	// A second put of the same output under another action reuses the
	// blob; a put again of the same action replaces its entry.
	if err := st.Put(ctx, "tenant-a", id("other action"), id(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAction(ctx, "tenant-a", id("other action")); err != nil {
		t.Error(err)
	}
}

// Another scope sees none of a scope's actions. (Its outputs too are in
// another repository; that a registry serves a repository's blobs only
// to it is a real registry's part, checked on the stack's: this package's
// unit tests run on go-containerregistry's registry, which shares blobs.)
func TestMissesAndScopes(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	body := "tenant a's output"
	if err := st.Put(ctx, "tenant-a", id("action"), id(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"unknown action", func() error { _, err := st.GetAction(ctx, "tenant-a", id("nope")); return err }()},
		{"unknown output", func() error { _, _, err := st.OpenOutput(ctx, "tenant-a", id("nope")); return err }()},
		{"another scope's action", func() error { _, err := st.GetAction(ctx, "tenant-b", id("action")); return err }()},
	} {
		if !errors.Is(tc.err, buildcache.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", tc.name, tc.err)
		}
	}
}

func TestPutRefusesWhatIsNotItsID(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		action   []byte
		output   []byte
		size     int64
		body     string
		scope    string
		wantKept bool
	}{
		{"body hashes to another id", id("a1"), id("the real bytes"), 9, "forgeries", "s", false},
		{"short body", id("a2"), id("twelve bytes"), 12, "twelve", "s", false},
		{"long body", id("a3"), id("abc"), 3, "abcdef", "s", false},
		{"short action id", []byte("short"), id("x"), 1, "x", "s", false},
		{"empty scope", id("a4"), id("x"), 1, "x", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := st.Put(ctx, tc.scope, tc.action, tc.output, tc.size, strings.NewReader(tc.body))
			if !errors.Is(err, buildcache.ErrInvalid) {
				t.Fatalf("put = %v, want ErrInvalid", err)
			}
			if len(tc.action) == buildcache.IDSize && tc.scope != "" {
				if _, err := st.GetAction(ctx, tc.scope, tc.action); !errors.Is(err, buildcache.ErrNotFound) {
					t.Errorf("a refused put left an entry: %v", err)
				}
			}
		})
	}
}

// A manifest under an action's tag that is not the store's is a miss.
func TestForeignManifestIsAMiss(t *testing.T) {
	st, host := newStore(t)
	ctx := context.Background()
	repo, err := name.NewRepository(host + "/buildsvc/gocache/" + scopeKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	if err := st.pusher.Put(ctx, actionTag(repo, id("a")), rawManifest(raw)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetAction(ctx, "s", id("a")); !errors.Is(err, buildcache.ErrNotFound) {
		t.Errorf("foreign manifest: %v, want ErrNotFound", err)
	}
}

// The server serves a store to builds through buildcache.Handler: the
// registry store works behind it as the disk store does.
func TestBehindTheHandler(t *testing.T) {
	st, _ := newStore(t)
	srv := httptest.NewServer(buildcache.Handler(st, "tenant-a", nil))
	defer srv.Close()
	ctx := context.Background()
	body := strings.Repeat("object bytes ", 1000)
	req := func(method, path string, hdr map[string]string, b string) int {
		t.Helper()
		r := httptest.NewRequest(method, srv.URL+path, strings.NewReader(b))
		r.RequestURI = ""
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		r = r.WithContext(ctx)
		resp, err := srv.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := req("PUT", "/v1/actions/"+hexOf(id("act")), map[string]string{buildcache.OutputIDHeader: hexOf(id(body))}, body); code != 204 {
		t.Fatalf("put = %d", code)
	}
	if code := req("GET", "/v1/actions/"+hexOf(id("act")), nil, ""); code != 200 {
		t.Errorf("get action = %d", code)
	}
	if code := req("GET", "/v1/outputs/"+hexOf(id(body)), nil, ""); code != 200 {
		t.Errorf("get output = %d", code)
	}
	if code := req("GET", "/v1/actions/"+hexOf(id("missing")), nil, ""); code != 404 {
		t.Errorf("get missing action = %d, want 404", code)
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func TestNewRefusesABadRepository(t *testing.T) {
	for _, repo := range []string{"", "Registry.example/UPPER", "registry.example/bad name"} {
		if _, err := New(repo); err == nil {
			t.Errorf("New(%q) accepted", repo)
		}
	}
}
