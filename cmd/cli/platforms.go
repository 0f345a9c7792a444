package main

import (
	"fmt"
	"strings"

	"github.com/docker/go-units"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// platformLines say what a build pushed, a line per platform:
//
//	linux/amd64 sha256:… 9.1MiB; attestations: sha256:… (https://slsa.dev/provenance/v0.2)
func platformLines(res *buildv1.BuildResult) []string {
	var lines []string
	for _, p := range res.GetPlatforms() {
		l := fmt.Sprintf("%s %s %s", p.GetPlatform(), p.GetDigest(), units.BytesSize(float64(p.GetSize())))
		var atts []string
		for _, a := range p.GetAttestations() {
			atts = append(atts, fmt.Sprintf("%s (%s)", a.GetDigest(), strings.Join(a.GetPredicateTypes(), ", ")))
		}
		if len(atts) > 0 {
			l += "; attestations: " + strings.Join(atts, ", ")
		}
		lines = append(lines, l)
	}
	return lines
}
