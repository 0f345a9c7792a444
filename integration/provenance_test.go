//go:build integration

package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/buildsvc/buildsvc/credentials"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// TestProvenance: a build of a private repository (the stack's HTTPS git
// host, a token) that asks for provenance pushes an OCI index: the image
// and BuildKit's SLSA provenance attestation of it. The result lists the
// image's platform, digest, size and the attestation; the provenance
// names the repository and the commit and holds no credential. The
// image's own manifest is the one a build without provenance pushes for
// the same commit, and it runs.
func TestProvenance(t *testing.T) {
	t.Parallel()
	p := loadPrivate(t)
	ts := startTestServer(t, func(c *server.Config) {
		c.Credentials = &credentials.Config{CABundle: p.CA}
	})
	files := plainFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "private-plain ok", "provenance ok", 1)
	repo, _ := p.newPrivateRepo(t, files)
	req := &buildv1.CreateImageRequest{
		GitRepo: repo, ImageTag: tagFor(t, "provenance"),
		GitCredentials: &buildv1.GitCredentials{Password: p.Token},
		Provenance:     true,
	}
	res := requireSuccess(t, build(t, ts.Client, req))
	if !res.GetIndex() || len(res.GetPlatforms()) != 1 {
		t.Fatalf("result %v, want an index with one platform", res)
	}
	plat := res.GetPlatforms()[0]
	if plat.GetPlatform() != "linux/amd64" || plat.GetSize() <= 0 || len(plat.GetAttestations()) != 1 ||
		!strings.HasPrefix(plat.GetAttestations()[0].GetPredicateTypes()[0], "https://slsa.dev/provenance/") {
		t.Fatalf("platform %v, want linux/amd64 with its size and one SLSA provenance attestation", plat)
	}
	if out := runEntrypoint(t, pushedImage(t, res.GetImage())); !strings.Contains(out, "provenance ok") {
		t.Errorf("binary printed %q", out)
	}

	// The attestation's statement, from the registry.
	ref, err := name.ParseReference(res.GetImage(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	att, err := remote.Image(ref.Context().Digest(plat.GetAttestations()[0].GetDigest()), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := att.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("attestation layers: %v (%d)", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	statement, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PredicateType string                               `json:"predicateType"`
		Subject       []struct{ Digest map[string]string } `json:"subject"`
	}
	if err := json.Unmarshal(statement, &st); err != nil {
		t.Fatalf("statement: %v\n%s", err, statement)
	}
	if len(st.Subject) == 0 || "sha256:"+st.Subject[0].Digest["sha256"] != plat.GetDigest() {
		t.Errorf("the statement's subject %v is not the image %s", st.Subject, plat.GetDigest())
	}
	for _, want := range []string{repo, res.GetCommit()} {
		if !bytes.Contains(statement, []byte(want)) {
			t.Errorf("the provenance does not name %s", want)
		}
	}
	for what, secret := range map[string]string{"the token": p.Token, "the token's basic auth": base64.StdEncoding.EncodeToString([]byte("x-access-token:" + p.Token))} {
		if bytes.Contains(statement, []byte(secret)) {
			t.Errorf("the provenance holds %s", what)
		}
	}

	// Without provenance, the same commit's image is the same manifest.
	plain := cloneRequest(req)
	plain.Provenance = false
	plain.GitCommit = res.GetCommit()
	plain.ImageTag = tagFor(t, "no-provenance")
	pres := requireSuccess(t, build(t, ts.Client, plain))
	if pres.GetIndex() || pres.GetDigest() != plat.GetDigest() {
		t.Errorf("without provenance: digest %s (index %v), want the image manifest %s", pres.GetDigest(), pres.GetIndex(), plat.GetDigest())
	}
	t.Logf("index %s, image %s (%d bytes), provenance %s", res.GetDigest(), plat.GetDigest(), plat.GetSize(),
		plat.GetAttestations()[0].GetDigest())
}
