package sbom

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

var (
	src    = Source{Repo: "https://git.example/team/app.git", Commit: "0123456789abcdef0123456789abcdef01234567", Dir: "."}
	target = Target{Name: "registry.example/team/app:v1", Platform: "linux/arm64", Created: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Creator: "buildsvc"}
)

func buildInfo() *debug.BuildInfo {
	return &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Path:      "example.com/app/cmd/app",
		Main:      debug.Module{Path: "example.com/app", Version: "(devel)"},
		Deps: []*debug.Module{
			{Path: "golang.org/x/text", Version: "v0.14.0", Sum: "h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ="},
			{Path: "example.com/old", Version: "v1.0.0", Sum: "h1:bad", Replace: &debug.Module{Path: "example.com/new", Version: "v1.2.0", Sum: "h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ="}},
		},
		Settings: []debug.BuildSetting{{Key: "-trimpath", Value: "true"}, {Key: "CGO_ENABLED", Value: "0"}, {Key: "GOARCH", Value: "arm64"}},
	}
}

type doc struct {
	SPDXVersion       string `json:"spdxVersion"`
	Name              string `json:"name"`
	DocumentNamespace string `json:"documentNamespace"`
	CreationInfo      struct {
		Created  string   `json:"created"`
		Creators []string `json:"creators"`
	} `json:"creationInfo"`
	Packages []struct {
		Name         string `json:"name"`
		Version      string `json:"versionInfo"`
		Download     string `json:"downloadLocation"`
		Comment      string `json:"comment"`
		Checksums    []struct{ Algorithm, ChecksumValue string }
		ExternalRefs []struct{ ReferenceLocator string } `json:"externalRefs"`
	} `json:"packages"`
	Relationships []struct {
		A    string `json:"spdxElementId"`
		B    string `json:"relatedSpdxElement"`
		Type string `json:"relationshipType"`
	} `json:"relationships"`
}

func TestDocument(t *testing.T) {
	dt, err := Document(buildInfo(), src, target)
	if err != nil {
		t.Fatal(err)
	}
	var d doc
	if err := json.Unmarshal(dt, &d); err != nil {
		t.Fatalf("%v\n%s", err, dt)
	}
	if d.SPDXVersion != "SPDX-2.3" || d.Name != target.Name || d.CreationInfo.Created != "2026-03-04T05:06:07Z" ||
		len(d.CreationInfo.Creators) != 1 || d.CreationInfo.Creators[0] != "Tool: buildsvc" {
		t.Errorf("document header %+v", d)
	}
	byName := map[string]int{}
	for i, p := range d.Packages {
		byName[p.Name] = i
	}
	m := d.Packages[byName["example.com/app"]]
	if m.Version != src.Commit || m.Download != "git+"+src.Repo+"@"+src.Commit || !strings.Contains(m.Comment, "-trimpath=true CGO_ENABLED=0 GOARCH=arm64") ||
		m.ExternalRefs[0].ReferenceLocator != "pkg:golang/example.com/app@"+src.Commit {
		t.Errorf("main package %+v", m)
	}
	if g := d.Packages[byName["go"]]; g.Version != "go1.26.8" || g.ExternalRefs[0].ReferenceLocator != "pkg:golang/stdlib@1.26.8" {
		t.Errorf("go package %+v", g)
	}
	x := d.Packages[byName["golang.org/x/text"]]
	if x.Version != "v0.14.0" || len(x.Checksums) != 1 || x.Checksums[0].Algorithm != "SHA256" ||
		x.Checksums[0].ChecksumValue != "49c5f9c357936b742a4fca22ebece23fb7535754b6f802d4d1b23ed335ca5a24" {
		t.Errorf("dependency %+v", x)
	}
	// A replaced module is listed as its replacement.
	if _, ok := byName["example.com/old"]; ok {
		t.Error("the replaced module is listed")
	}
	if r := d.Packages[byName["example.com/new"]]; r.Version != "v1.2.0" || !strings.Contains(r.Comment, "replaces example.com/old v1.0.0") {
		t.Errorf("replacement %+v", r)
	}
	if len(d.Packages) != 4 || len(d.Relationships) != 4 || d.Relationships[0].Type != "DESCRIBES" {
		t.Errorf("%d packages, relationships %+v", len(d.Packages), d.Relationships)
	}
	// The same inputs, the same bytes; another platform, another namespace.
	again, _ := Document(buildInfo(), src, target)
	if !bytes.Equal(again, dt) {
		t.Error("two documents of the same inputs differ")
	}
	other := target
	other.Platform = "linux/amd64"
	od, _ := Document(buildInfo(), src, other)
	var o doc
	_ = json.Unmarshal(od, &o)
	if o.DocumentNamespace == d.DocumentNamespace {
		t.Error("two platforms share a namespace")
	}
}

func TestDocumentRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		bi  *debug.BuildInfo
		src Source
	}{
		"no build info":  {nil, src},
		"no main module": {&debug.BuildInfo{GoVersion: "go1.26.8"}, src},
		"no commit":      {buildInfo(), Source{Repo: src.Repo}},
		"no repository":  {buildInfo(), Source{Commit: src.Commit}},
	} {
		if _, err := Document(tc.bi, tc.src, target); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Read reads a real binary's build info: this test's.
func TestRead(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bi, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if bi.Main.Path != "github.com/buildsvc/buildsvc" || !strings.HasPrefix(bi.GoVersion, "go1.") {
		t.Errorf("build info %+v", bi)
	}
	if _, err := Read(strings.NewReader("not a binary")); err == nil {
		t.Error("read a binary from text")
	}
}
