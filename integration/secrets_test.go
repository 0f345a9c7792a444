//go:build integration

package integration

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/buildsvc/buildsvc/metrics"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// splitOutputGo is a `go` that first prints the file leak.txt of the
// source directory, if there is one, to stderr in two writes a second
// apart (so BuildKit delivers it as two log chunks), and the variable
// BUILDSVC_TEST_SECRET if it is set, then runs the real go.
const splitOutputGo = `#!/bin/sh
if [ -n "$BUILDSVC_TEST_SECRET" ]; then
	printf 'secret env in go %s: %s\n' "$1" "$BUILDSVC_TEST_SECRET" >&2
fi
if [ -f leak.txt ]; then
	printf 'leaked: ' >&2
	head -c 16 leak.txt >&2
	sleep 1
	tail -c +17 leak.txt >&2
	printf ' :end\n' >&2
fi
exec /usr/local/go/bin/go "$@"
`

// splitOutputBuilder pushes the stack's builder image with splitOutputGo
// first on its PATH and returns its reference.
func splitOutputBuilder(t testing.TB) string {
	t.Helper()
	st := loadStack(t)
	base, err := name.ParseReference(st.BuilderImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuthFromKeychain(authn.DefaultKeychain)
	img, err := remote.Image(base, auth)
	if err != nil {
		t.Fatalf("fetch the builder: %v", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	for _, h := range []*tar.Header{
		{Name: "buildsvc-test/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch},
		{Name: "buildsvc-test/bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch},
		{Name: "buildsvc-test/bin/go", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: epoch, Size: int64(len(splitOutputGo))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Write([]byte(splitOutputGo)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, l); err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config.DeepCopy()
	for i, kv := range cfg.Env {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			cfg.Env[i] = "PATH=/buildsvc-test/bin:" + p
		}
	}
	if img, err = mutate.Config(img, *cfg); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(st.RegistryAddr+"/it/split-output-builder:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, auth); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// imageBytes returns the image's config and the contents of its layers,
// uncompressed.
func imageBytes(t testing.TB, img v1.Image) []byte {
	t.Helper()
	var all bytes.Buffer
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	all.Write(cfg)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(&all, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	return all.Bytes()
}

// A secret the server knows (the registry password) printed by a build's own
// steps, whole or split across two output chunks, appears in no output of
// the service: not in the streamed events, the stored log, the build
// records, the history file, the server log, the metrics or the image.
func TestSecretInBuildOutputIsMasked(t *testing.T) {
	pw, err := os.ReadFile(os.Getenv("REGISTRY_PASSWORD_FILE"))
	if err != nil {
		t.Fatalf("read the registry password: %v", err)
	}
	password := strings.TrimSpace(string(pw))
	if len(password) < 20 {
		t.Fatalf("the registry password has %d bytes; this test needs a long one", len(password))
	}
	auth := base64.StdEncoding.EncodeToString([]byte(os.Getenv("REGISTRY_USER") + ":" + password))
	secrets := map[string]string{"password": password, "docker config auth": auth,
		"the password's first half": password[:16], "the password's second half": password[16:]}

	reg := metrics.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	builder := splitOutputBuilder(t)
	ts := startTestServer(t, func(c *server.Config) {
		c.BuilderImage = builder
		c.Observer = m
	})

	// One build prints the password split in two chunks and succeeds; the
	// other prints it whole in a compiler error and fails.
	okFiles := sampleFiles(t)
	okFiles["leak.txt"] = password
	okRepo := newRepo(t, okFiles)
	badFiles := sampleFiles(t)
	badFiles["broken.go"] = fmt.Sprintf("package main\n\nvar _ int = %q\n", password)
	badRepo := newRepo(t, badFiles)

	ok := build(t, ts.Client, &buildv1.CreateImageRequest{GitRepo: okRepo.URL, GitCommit: "main", ImageTag: tagFor(t, "ok")})
	res := requireSuccess(t, ok)
	bad := build(t, ts.Client, &buildv1.CreateImageRequest{GitRepo: badRepo.URL, GitCommit: "main", ImageTag: tagFor(t, "bad")})
	if bad.buildErr() == nil {
		t.Fatalf("the build with a compile error did not fail: %v", bad.err)
	}

	// The output was there, masked: split across chunks in the first build,
	// whole in the compiler's message in the second.
	var before, after int
	for i, e := range ok.events {
		if d := string(e.GetLog().GetData()); strings.Contains(d, "leaked: ") {
			before = i
		} else if strings.Contains(d, "*****") && before > 0 && after == 0 {
			after = i
		}
	}
	if !strings.Contains(ok.logs(), "leaked: ***** :end") {
		t.Fatalf("the split secret was not printed masked; logs:\n%s", ok.logs())
	}
	if after == 0 {
		t.Fatalf("the secret's two halves arrived in one chunk, so this test did not test a split (events %d, %d)", before, after)
	}
	t.Logf("the split secret: %q in event %d, %q in event %d", ok.events[before].GetLog().GetData(), before, ok.events[after].GetLog().GetData(), after)
	if !strings.Contains(bad.logs(), `cannot use "*****" (untyped string constant) as int value`) {
		t.Fatalf("the compiler's message is not in the log, masked; logs:\n%s", bad.logs())
	}

	outputs := map[string][]byte{}
	for name, o := range map[string]outcome{"ok": ok, "bad": bad} {
		id := o.events[0].GetBuildId()
		outputs[name+" build's streamed events"] = eventsText(o.events)
		outputs[name+" build's stored events (WatchBuild)"] = eventsText(watchAll(t, ts.Client, id, 0))
		info, err := ts.Client.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := protojson.Marshal(info)
		outputs[name+" build's record"] = b
	}
	list, err := ts.Client.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := protojson.Marshal(list)
	outputs["ListBuilds"] = b
	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()
	outputs["metrics"] = scrapeText(t, hs.URL+"/metrics")
	outputs["image"] = imageBytes(t, pushedImage(t, res.Image))
	// Stopped, the server has written all it will to its log and history.
	ts.Stop()
	outputs["server log"] = []byte(ts.Log.String())
	hist, err := os.ReadFile(ts.HistoryPath)
	if err != nil {
		t.Fatal(err)
	}
	outputs["history file"] = hist

	if !bytes.Contains(outputs["history file"], []byte("leaked: ")) {
		t.Fatal("the history file does not hold the build's log, so looking for the secret in it proves nothing")
	}
	for where, text := range outputs {
		for what, secret := range secrets {
			if bytes.Contains(text, []byte(secret)) {
				i := bytes.Index(text, []byte(secret))
				t.Errorf("%s holds %s: ...%q...", where, what, text[max(0, i-60):min(len(text), i+len(secret)+20)])
			}
		}
	}
}

// eventsText is every event as JSON, with log data also as raw bytes.
func eventsText(evs []*buildv1.BuildEvent) []byte {
	var b bytes.Buffer
	for _, e := range evs {
		j, _ := protojson.Marshal(e)
		b.Write(j)
		b.Write(e.GetLog().GetData())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// scrapeText returns a /metrics page as it is.
func scrapeText(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
