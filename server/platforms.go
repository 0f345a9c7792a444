package server

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
)

// MaxPlatforms is how many platforms one build may ask for.
const MaxPlatforms = 8

// goArches are the architectures a build may target, with the variants
// each takes ("" for none): the GOARCH values Go cross-compiles a static
// linux binary for without cgo.
var goArches = map[string][]string{
	"amd64":    {""},
	"arm64":    {"", "v8"},
	"arm":      {"v5", "v6", "v7"},
	"386":      {""},
	"riscv64":  {""},
	"ppc64le":  {""},
	"s390x":    {""},
	"mips64le": {""},
	"loong64":  {""},
}

// parsePlatforms checks the request's platforms: linux, an architecture
// Go builds for (GOARCH, with GOARM's variants for arm), each once, at
// most MaxPlatforms. They come back normalized (arm64/v8 is arm64).
func parsePlatforms(raw []string) ([]ocispecs.Platform, error) {
	const field = "platforms"
	if len(raw) > MaxPlatforms {
		return nil, fieldErr(field, "%d platforms, at most %d", len(raw), MaxPlatforms)
	}
	var out []ocispecs.Platform
	seen := map[string]bool{}
	for _, s := range raw {
		s = strings.TrimSpace(s)
		p, err := platforms.Parse(s)
		if err != nil || s == "" || strings.Count(s, "/") < 1 {
			return nil, fieldErr(field, "%s is not a platform (os/arch[/variant], e.g. linux/arm64)", quote(s))
		}
		p = platforms.Normalize(p)
		if p.OS != "linux" {
			return nil, fieldErr(field, "%s: only linux images are built", quote(s))
		}
		variants, ok := goArches[p.Architecture]
		if !ok {
			return nil, fieldErr(field, "%s: %s is not an architecture Go builds for here (%s)", quote(s), p.Architecture, strings.Join(slices.Sorted(maps.Keys(goArches)), ", "))
		}
		if !slices.Contains(variants, p.Variant) {
			return nil, fieldErr(field, "%s: %s has no variant %q", quote(s), p.Architecture, p.Variant)
		}
		if p.Architecture == "arm64" {
			p.Variant = ""
		}
		id := platforms.Format(p)
		if seen[id] {
			return nil, fieldErr(field, "%s is named twice", id)
		}
		seen[id] = true
		out = append(out, p)
	}
	return out, nil
}

// formatPlatforms are ps as the request shows them.
func formatPlatforms(ps []ocispecs.Platform) []string {
	var out []string
	for _, p := range ps {
		out = append(out, platforms.Format(p))
	}
	return out
}

// checkBasePlatforms refuses a base image (ref, pinned) that lacks one of
// r's platforms, naming both; a base that could not be read is left to
// the build (baseUnchecked).
func (s *Server) checkBasePlatforms(ctx context.Context, r *request, allow egress.Allowance, docker *configfile.ConfigFile, creds *credentials.Build) error {
	if len(r.Platforms) == 0 {
		return nil
	}
	ref, err := name.ParseReference(r.BaseImage)
	if err != nil {
		return fieldErr("base_image", "%s is not a valid image reference", quote(r.BaseImage))
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(s.registryTransport(allow)),
		remote.WithAuthFromKeychain(registryKeychain{docker: docker, creds: creds}))
	if err != nil {
		return baseUnchecked{err}
	}
	var has []ocispecs.Platform
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return baseUnchecked{err}
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return baseUnchecked{err}
		}
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Annotations[annotationRefType] != refTypeAttestation {
				has = append(has, platforms.Normalize(ocispecs.Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture, Variant: m.Platform.Variant}))
			}
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return baseUnchecked{err}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return baseUnchecked{err}
		}
		has = append(has, platforms.Normalize(ocispecs.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}))
	}
	for _, want := range r.Platforms {
		if !slices.ContainsFunc(has, platforms.OnlyStrict(want).Match) {
			return fieldErr("platforms", "%s is not a platform of base image %s (it has %s)",
				platforms.Format(want), quote(r.BaseImage), strings.Join(formatPlatforms(has), ", "))
		}
	}
	return nil
}
