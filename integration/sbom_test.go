//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/mod/modfile"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// TestSBOM builds the sample for linux/amd64 and linux/arm64 with SBOMs:
// each platform's image has an SPDX attestation whose packages are the
// main module at the commit, the Go toolchain, and exactly the modules of
// the sample's go.mod, with the versions `go version -m` reads from the
// extracted binary, and their checksums; the build settings are those of
// the binary.
func TestSBOM(t *testing.T) {
	t.Parallel()
	ts := startTestServer(t, nil)
	files := sampleFiles(t)
	repo := newRepo(t, files)
	res := requireSuccess(t, build(t, ts.Client, &buildv1.CreateImageRequest{
		GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "sbom"),
		Platforms: []string{"linux/amd64", "linux/arm64"}, Sbom: true,
	}))
	mf, err := modfile.Parse("go.mod", []byte(files["go.mod"]), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantMods := map[string]string{}
	for _, r := range mf.Require {
		wantMods[r.Mod.Path] = r.Mod.Version
	}
	ref, err := name.ParseReference(res.GetImage(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetPlatforms()) != 2 {
		t.Fatalf("platforms %v", res.GetPlatforms())
	}
	for _, p := range res.GetPlatforms() {
		t.Run(strings.ReplaceAll(p.GetPlatform(), "/", "-"), func(t *testing.T) {
			var att *buildv1.Attestation
			for _, a := range p.GetAttestations() {
				if len(a.GetPredicateTypes()) > 0 && a.GetPredicateTypes()[0] == "https://spdx.dev/Document" {
					att = a
				}
			}
			if att == nil {
				t.Fatalf("no SPDX attestation in %v", p)
			}
			img := registryImage(t, ref.Context().Digest(p.GetDigest()))
			gov := goVersionM(t, extractEntrypoint(t, img))
			stmt := statement(t, registryImage(t, ref.Context().Digest(att.GetDigest())))
			var d struct {
				Subject   []struct{ Digest map[string]string } `json:"subject"`
				Predicate struct {
					Packages []struct {
						Name      string `json:"name"`
						Version   string `json:"versionInfo"`
						Comment   string `json:"comment"`
						Checksums []struct {
							Algorithm string `json:"algorithm"`
							Value     string `json:"checksumValue"`
						} `json:"checksums"`
					} `json:"packages"`
				} `json:"predicate"`
			}
			if err := json.Unmarshal(stmt, &d); err != nil {
				t.Fatalf("%v\n%s", err, stmt)
			}
			if len(d.Subject) != 1 || "sha256:"+d.Subject[0].Digest["sha256"] != p.GetDigest() {
				t.Errorf("the SBOM's subject %v is not the image %s", d.Subject, p.GetDigest())
			}
			got := map[string]string{}
			for _, pkg := range d.Predicate.Packages {
				switch pkg.Name {
				case "example.com/sampleapp":
					if pkg.Version != res.GetCommit() {
						t.Errorf("main module version %q, want the commit %s", pkg.Version, res.GetCommit())
					}
					for _, s := range gov.settings {
						if !strings.Contains(pkg.Comment, s) {
							t.Errorf("the main package's build settings %q lack %q", pkg.Comment, s)
						}
					}
				case "go":
					if pkg.Version != gov.goVersion {
						t.Errorf("go package %q, the binary says %s", pkg.Version, gov.goVersion)
					}
				default:
					got[pkg.Name] = pkg.Version
					if len(pkg.Checksums) != 1 || pkg.Checksums[0].Algorithm != "SHA256" || len(pkg.Checksums[0].Value) != 64 {
						t.Errorf("%s has checksums %v", pkg.Name, pkg.Checksums)
					}
				}
			}
			if len(got) != len(wantMods) || len(got) != len(gov.deps) {
				t.Errorf("SBOM modules %v; go.mod's %v; the binary's %v", got, wantMods, gov.deps)
			}
			for m, v := range wantMods {
				if got[m] != v || gov.deps[m] != v {
					t.Errorf("%s: SBOM %q, go.mod %q, go version -m %q", m, got[m], v, gov.deps[m])
				}
			}
		})
	}
}

func registryImage(t *testing.T, ref name.Reference) v1.Image {
	t.Helper()
	img, err := remote.Image(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// statement is the in-toto statement of an attestation manifest (its
// first layer).
func statement(t *testing.T, att v1.Image) []byte {
	t.Helper()
	layers, err := att.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("attestation layers: %v (%d)", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dt, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

// goVersionM is what `go version -m` says of a binary.
type goVersionMInfo struct {
	goVersion string
	deps      map[string]string
	settings  []string // key=value
}

func goVersionM(t *testing.T, bin string) goVersionMInfo {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	info := goVersionMInfo{deps: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		switch {
		case first && len(f) >= 2:
			info.goVersion = f[1]
		case len(f) >= 3 && f[0] == "dep":
			info.deps[f[1]] = f[2]
		case len(f) >= 2 && f[0] == "build":
			info.settings = append(info.settings, strings.Join(f[1:], " "))
		}
	}
	return info
}
