// Package sbom makes the SPDX 2.3 software bill of materials of a Go
// binary from its build info (debug/buildinfo, what `go version -m`
// shows): the main module with the commit it was built from, every
// dependency module with its version and checksum, the Go toolchain, and
// the build settings. The document is a pure function of its inputs: the
// same binary and source give the same bytes.
package sbom

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx/v2/common"
	spdx "github.com/spdx/tools-golang/spdx/v2/v2_3"
)

// PredicateType is the in-toto predicate type of an SPDX document.
const PredicateType = "https://spdx.dev/Document"

// Source is where the binary was built from.
type Source struct {
	// Repo is the git repository's URL, without credentials.
	Repo string
	// Commit is the full commit id.
	Commit string
	// Dir is the module's directory in the repository ("" or "." for its
	// root).
	Dir string
}

// Target is what the document describes.
type Target struct {
	// Name is the document's name, e.g. the image reference.
	Name string
	// Platform is the binary's, os/arch[/variant].
	Platform string
	// Created is the document's time: the commit's, so that a rebuild
	// gives the same document.
	Created time.Time
	// Creator names the tool, e.g. "buildsvc".
	Creator string
}

// Read returns the build info of the Go binary r.
func Read(r io.ReaderAt) (*debug.BuildInfo, error) {
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil, fmt.Errorf("sbom: read the binary's build info: %w", err)
	}
	return bi, nil
}

// Document is the SPDX JSON document of the binary with build info bi,
// built from src, for t.
func Document(bi *debug.BuildInfo, src Source, t Target) ([]byte, error) {
	if bi == nil || bi.Main.Path == "" {
		return nil, errors.New("sbom: the binary has no main module in its build info")
	}
	if src.Repo == "" || src.Commit == "" {
		return nil, errors.New("sbom: the source's repository and commit are required")
	}
	mainID := common.ElementID("Package-main")
	goID := common.ElementID("Package-go")
	download := "git+" + src.Repo + "@" + src.Commit
	if d := strings.Trim(src.Dir, "/."); d != "" {
		download += "#" + d
	}
	var settings []string
	for _, s := range bi.Settings {
		settings = append(settings, s.Key+"="+s.Value)
	}
	main := &spdx.Package{
		PackageName:             bi.Main.Path,
		PackageSPDXIdentifier:   mainID,
		PackageVersion:          src.Commit,
		PackageDownloadLocation: download,
		PackageSourceInfo:       "built by " + bi.GoVersion + " from " + src.Repo + " at commit " + src.Commit,
		PackageComment:          "package " + bi.Path + "; build settings: " + strings.Join(settings, " "),
		PrimaryPackagePurpose:   "APPLICATION",
		PackageLicenseConcluded: "NOASSERTION",
		PackageLicenseDeclared:  "NOASSERTION",
		PackageCopyrightText:    "NOASSERTION",
		PackageExternalReferences: []*spdx.PackageExternalReference{
			purl(bi.Main.Path, src.Commit),
		},
	}
	gover := strings.TrimPrefix(bi.GoVersion, "go")
	toolchain := &spdx.Package{
		PackageName:             "go",
		PackageSPDXIdentifier:   goID,
		PackageVersion:          bi.GoVersion,
		PackageDownloadLocation: "NOASSERTION",
		PackageComment:          "the Go toolchain and standard library the binary was built with",
		PackageLicenseConcluded: "NOASSERTION",
		PackageLicenseDeclared:  "NOASSERTION",
		PackageCopyrightText:    "NOASSERTION",
		PackageExternalReferences: []*spdx.PackageExternalReference{
			{Category: "PACKAGE-MANAGER", RefType: "purl", Locator: "pkg:golang/stdlib@" + gover},
		},
	}
	doc := &spdx.Document{
		SPDXVersion:       spdx.Version,
		DataLicense:       spdx.DataLicense,
		SPDXIdentifier:    "DOCUMENT",
		DocumentName:      t.Name,
		DocumentNamespace: namespace(src, t),
		CreationInfo: &spdx.CreationInfo{
			Creators: []common.Creator{{CreatorType: "Tool", Creator: t.Creator}},
			Created:  t.Created.UTC().Format(time.RFC3339),
		},
		DocumentComment: "the Go binary of " + bi.Path + " for " + t.Platform,
		Packages:        []*spdx.Package{main, toolchain},
		Relationships: []*spdx.Relationship{
			{RefA: common.MakeDocElementID("", "DOCUMENT"), RefB: common.MakeDocElementID("", string(mainID)), Relationship: common.TypeRelationshipDescribe},
			{RefA: common.MakeDocElementID("", string(mainID)), RefB: common.MakeDocElementID("", string(goID)), Relationship: common.TypeRelationshipDependsOn},
		},
	}
	for i, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		id := common.ElementID(fmt.Sprintf("Package-dep-%d", i+1))
		p := &spdx.Package{
			PackageName:             m.Path,
			PackageSPDXIdentifier:   id,
			PackageVersion:          m.Version,
			PackageDownloadLocation: "NOASSERTION",
			PackageLicenseConcluded: "NOASSERTION",
			PackageLicenseDeclared:  "NOASSERTION",
			PackageCopyrightText:    "NOASSERTION",
			PackageExternalReferences: []*spdx.PackageExternalReference{
				purl(m.Path, m.Version),
			},
		}
		if d.Replace != nil {
			p.PackageComment = "replaces " + d.Path + " " + d.Version
		}
		if sum, ok := h1SHA256(m.Sum); ok {
			p.PackageChecksums = []common.Checksum{{Algorithm: common.SHA256, Value: sum}}
			p.PackageSourceInfo = "go.sum " + m.Sum
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, &spdx.Relationship{
			RefA: common.MakeDocElementID("", string(mainID)), RefB: common.MakeDocElementID("", string(id)), Relationship: common.TypeRelationshipDependsOn,
		})
	}
	var buf bytes.Buffer
	if err := spdxjson.Write(doc, &buf); err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return buf.Bytes(), nil
}

// purl is the package URL of a Go module version.
func purl(path, version string) *spdx.PackageExternalReference {
	return &spdx.PackageExternalReference{Category: "PACKAGE-MANAGER", RefType: "purl", Locator: "pkg:golang/" + path + "@" + version}
}

// h1SHA256 is the hex of a go.sum "h1:" hash (a SHA-256 of the module's
// file tree, base64).
func h1SHA256(sum string) (string, bool) {
	b64, ok := strings.CutPrefix(sum, "h1:")
	if !ok {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(raw), true
}

// namespace is the document's unique URI: the same source and target
// give the same one.
func namespace(src Source, t Target) string {
	h := sha256.Sum256([]byte(src.Repo + "\x00" + src.Commit + "\x00" + src.Dir + "\x00" + t.Name + "\x00" + t.Platform))
	return "urn:buildsvc:spdx:" + hex.EncodeToString(h[:16])
}
