package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The annotations BuildKit puts on an attestation manifest's descriptor
// in an index, and on its layers (in-toto statements).
const (
	annotationRefType       = "vnd.docker.reference.type"
	annotationRefDigest     = "vnd.docker.reference.digest"
	refTypeAttestation      = "attestation-manifest"
	annotationPredicateType = "in-toto.io/predicate-type"
)

// pushed reads back from its registry what build b pushed at ref (a
// digest): the image of each platform with its size, and the
// attestations beside it when ref is an index.
func (s *Server) pushed(ctx context.Context, b *build, ref name.Digest) (platforms []*buildv1.PlatformImage, index bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ResolveTimeout)
	defer cancel()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(s.registryTransport(b.allow)),
		remote.WithAuthFromKeychain(registryKeychain{docker: b.registry, creds: b.creds})}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, false, fmt.Errorf("read the pushed image %s: %w", ref, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, false, err
		}
		p, err := platformImage(img, desc.Digest, desc.Size)
		if err != nil {
			return nil, false, err
		}
		return []*buildv1.PlatformImage{p}, false, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, true, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, true, err
	}
	byDigest := map[string]*buildv1.PlatformImage{}
	var attestations []v1.Descriptor
	for _, m := range im.Manifests {
		if m.Annotations[annotationRefType] == refTypeAttestation {
			attestations = append(attestations, m)
			continue
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			return nil, true, err
		}
		p, err := platformImage(img, m.Digest, m.Size)
		if err != nil {
			return nil, true, err
		}
		platforms = append(platforms, p)
		byDigest[p.Digest] = p
	}
	for _, a := range attestations {
		p := byDigest[a.Annotations[annotationRefDigest]]
		if p == nil {
			continue // an attestation of nothing in the index
		}
		img, err := idx.Image(a.Digest)
		if err != nil {
			return nil, true, err
		}
		mf, err := img.Manifest()
		if err != nil {
			return nil, true, err
		}
		att := &buildv1.Attestation{Digest: a.Digest.String()}
		for _, l := range mf.Layers {
			if t := l.Annotations[annotationPredicateType]; t != "" && !slices.Contains(att.PredicateTypes, t) {
				att.PredicateTypes = append(att.PredicateTypes, t)
			}
		}
		p.Attestations = append(p.Attestations, att)
	}
	return platforms, true, nil
}

// platformImage is img's entry: its platform from its config, and the
// bytes of its manifest (manifestSize), config and layers.
func platformImage(img v1.Image, digest v1.Hash, manifestSize int64) (*buildv1.PlatformImage, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	mf, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	size := manifestSize + mf.Config.Size
	for _, l := range mf.Layers {
		size += l.Size
	}
	platform := cf.OS + "/" + cf.Architecture
	if cf.Variant != "" {
		platform += "/" + cf.Variant
	}
	return &buildv1.PlatformImage{Platform: platform, Digest: digest.String(), Size: size}, nil
}
