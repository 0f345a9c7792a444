package server

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/moby/buildkit/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// maxDiffFiles is how many differing files a difference lists.
const maxDiffFiles = 20

// rebuild is what makes a build a verification's rebuild.
type rebuild struct {
	// cacheID is the prefix of its cache mounts' ids: new ones, empty.
	cacheID string
	// tarPath is where the OCI exporter writes the image.
	tarPath string
	// ociTypes are the original's media types (OCI, else Docker's).
	ociTypes bool
}

// export is the rebuild's exporter: the image as an OCI tarball in
// tarPath, made as the original was (its compression and media types)
// but not pushed.
func (rb *rebuild) export(r *request) client.ExportEntry {
	attrs := map[string]string{"oci-mediatypes": fmt.Sprint(rb.ociTypes)}
	r.compressionAttrs(attrs)
	return client.ExportEntry{Type: client.ExporterOCI, Attrs: attrs, Output: func(map[string]string) (io.WriteCloser, error) {
		return os.Create(rb.tarPath)
	}}
}

// VerifyBuild implements buildv1.BuildServer.
func (s *Server) VerifyBuild(ctx context.Context, req *buildv1.VerifyBuildRequest) (*buildv1.VerifyBuildResponse, error) {
	info, err := s.callersBuild(ctx, req.GetBuildId())
	if err != nil {
		return nil, toStatus(err)
	}
	id := info.GetBuildId()
	if info.GetState() != buildv1.BuildState_BUILD_STATE_SUCCEEDED || info.GetResult().GetDigest() == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "build %s is %s: only a succeeded build can be verified", id,
			strings.TrimPrefix(info.GetState().String(), "BUILD_STATE_"))
	}
	select {
	case s.verifying <- struct{}{}:
		defer func() { <-s.verifying }()
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	}
	v, err := s.verify(ctx, info)
	if err != nil {
		return nil, toStatus(err)
	}
	// Stored with the build: its record, as the store has it.
	stored, err := s.cfg.Store.GetBuild(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	stored.Verification = v
	if err := s.cfg.Store.PutBuild(ctx, stored); err != nil {
		return nil, toStatus(fmt.Errorf("store the verification: %w", err))
	}
	s.cfg.Logger.Info("build verified", "build", id, "reproducible", v.GetReproducible(), "took", v.GetRebuildDuration().AsDuration())
	return &buildv1.VerifyBuildResponse{Verification: v}, nil
}

// verify rebuilds info's commit from nothing, without pushing, and
// compares each platform's image with the pushed one.
func (s *Server) verify(ctx context.Context, info *buildv1.BuildInfo) (*buildv1.Verification, error) {
	pol := s.tenantPolicy(info.GetTenant())
	r, err := parseRequest(info.GetRequest(), withTenantAllow(s.cfg, pol))
	if err != nil {
		return nil, fmt.Errorf("the build's request: %w", err)
	}
	// The images' manifests are what is compared; attestations beside them
	// are not rebuilt.
	r.Provenance, r.SBOM = false, false
	dockerCfg, err := s.registryConfig(pol)
	if err != nil {
		return nil, err
	}
	creds, err := s.buildCredentials(info.GetTenant(), r)
	if err != nil {
		return nil, err
	}
	b := &build{id: "verify-" + newBuildID(time.Now()), tenant: info.GetTenant(), registry: dockerCfg, creds: creds,
		allow: s.egressAllow().Add(egressAllowance(pol)), req: r, commit: info.GetResult().GetCommit(), stop: make(chan struct{})}
	b.log = newEventLog(b.id, newRedactor(append(buildkitd.Secrets(dockerCfg), creds.Values()...)), s.cfg.LogCap)

	tag, err := name.NewTag(r.Tag)
	if err != nil {
		return nil, err
	}
	pushed, _, err := s.pushed(ctx, b, tag.Context().Digest(info.GetResult().GetDigest()))
	if err != nil {
		// Nothing to compare with: the registry is out of reach (or of the
		// host policy), or the image is gone.
		return nil, status.Errorf(codes.Unavailable, "the pushed image cannot be read to compare with: %v", err)
	}
	originals := map[string]v1.Image{}
	ociTypes := true
	for _, p := range pushed {
		img, err := remote.Image(tag.Context().Digest(p.GetDigest()), remote.WithContext(ctx), remote.WithTransport(s.registryTransport(b.allow)),
			remote.WithAuthFromKeychain(registryKeychain{docker: b.registry, creds: b.creds}))
		if err != nil {
			return nil, fmt.Errorf("the pushed image of %s: %w", p.GetPlatform(), err)
		}
		if mt, err := img.MediaType(); err == nil && mt != types.OCIManifestSchema1 {
			ociTypes = false
		}
		originals[p.GetPlatform()] = img
	}

	dir, err := os.MkdirTemp("", "buildsvc-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	b.verify = &rebuild{cacheID: b.id, tarPath: filepath.Join(dir, "image.tar"), ociTypes: ociTypes}
	start := time.Now()
	if _, err := s.solve(ctx, b, b.commit); err != nil {
		return nil, fmt.Errorf("the rebuild: %w", err)
	}
	took := time.Since(start)
	rebuilt, err := ociImages(b.verify.tarPath, filepath.Join(dir, "layout"))
	if err != nil {
		return nil, fmt.Errorf("the rebuilt image: %w", err)
	}
	v := &buildv1.Verification{Reproducible: true, Time: timestamppb.Now(), RebuildDuration: durationpb.New(took)}
	for _, p := range pushed {
		pv := &buildv1.PlatformVerification{Platform: p.GetPlatform(), OriginalDigest: p.GetDigest()}
		img, ok := rebuilt[p.GetPlatform()]
		if !ok {
			pv.Differences = []*buildv1.Difference{{What: "the rebuild has no image for " + p.GetPlatform()}}
		} else {
			d, _ := img.Digest()
			pv.RebuiltDigest = d.String()
			if pv.Differences, err = compareImages(originals[p.GetPlatform()], img); err != nil {
				return nil, fmt.Errorf("compare %s: %w", p.GetPlatform(), err)
			}
		}
		pv.Reproducible = pv.RebuiltDigest == pv.OriginalDigest
		v.Reproducible = v.Reproducible && pv.Reproducible
		v.Platforms = append(v.Platforms, pv)
	}
	return v, nil
}

// ociImages reads the images of an OCI tarball (the exporter's, an image
// or an index of them), unpacked into dir, by platform.
func ociImages(tarPath, dir string) (map[string]v1.Image, error) {
	if err := untar(tarPath, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[string]v1.Image{}
	var add func(idx v1.ImageIndex, descs []v1.Descriptor) error
	add = func(idx v1.ImageIndex, descs []v1.Descriptor) error {
		for _, d := range descs {
			if d.Annotations[annotationRefType] == refTypeAttestation {
				continue
			}
			if d.MediaType.IsIndex() {
				child, err := idx.ImageIndex(d.Digest)
				if err != nil {
					return err
				}
				cm, err := child.IndexManifest()
				if err != nil {
					return err
				}
				if err := add(child, cm.Manifests); err != nil {
					return err
				}
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			p, err := platformImage(img, d.Digest, d.Size)
			if err != nil {
				return err
			}
			out[p.GetPlatform()] = img
		}
		return nil
	}
	return out, add(idx, im.Manifests)
}

// untar unpacks the regular files and directories of a tarball into dir,
// refusing paths that leave it.
func untar(tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// compareImages says what differs between an image and its rebuild: the
// config, and each layer that does with the files in it that do.
func compareImages(orig, rebuilt v1.Image) ([]*buildv1.Difference, error) {
	od, err := orig.Digest()
	if err != nil {
		return nil, err
	}
	rd, err := rebuilt.Digest()
	if err != nil {
		return nil, err
	}
	if od == rd {
		return nil, nil
	}
	var diffs []*buildv1.Difference
	oc, err := orig.ConfigName()
	if err != nil {
		return nil, err
	}
	rc, err := rebuilt.ConfigName()
	if err != nil {
		return nil, err
	}
	if oc != rc {
		diffs = append(diffs, &buildv1.Difference{What: "config", OriginalDigest: oc.String(), RebuiltDigest: rc.String()})
	}
	ol, err := orig.Layers()
	if err != nil {
		return nil, err
	}
	rl, err := rebuilt.Layers()
	if err != nil {
		return nil, err
	}
	for i := range max(len(ol), len(rl)) {
		d := &buildv1.Difference{What: fmt.Sprintf("layer %d", i)}
		var of, rf map[string]string
		if i < len(ol) {
			h, _ := ol[i].Digest()
			d.OriginalDigest = h.String()
		}
		if i < len(rl) {
			h, _ := rl[i].Digest()
			d.RebuiltDigest = h.String()
		}
		if d.OriginalDigest == d.RebuiltDigest {
			continue
		}
		if i < len(ol) {
			if of, err = layerFiles(ol[i]); err != nil {
				return nil, err
			}
		}
		if i < len(rl) {
			if rf, err = layerFiles(rl[i]); err != nil {
				return nil, err
			}
		}
		d.Files = fileDiffs(of, rf)
		diffs = append(diffs, d)
	}
	return diffs, nil
}

// layerFiles is what a layer holds, by path: each entry's type, mode,
// owner, time and, for a file, the SHA-256 of its content.
func layerFiles(l v1.Layer) (map[string]string, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		meta := fmt.Sprintf("type %c, mode %o, owner %d:%d, time %d, link %q", h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), h.Linkname)
		content := ""
		if h.Typeflag == tar.TypeReg {
			sum := sha256.New()
			if _, err := io.Copy(sum, tr); err != nil {
				return nil, err
			}
			content = hex.EncodeToString(sum.Sum(nil))
		}
		files[strings.TrimPrefix(h.Name, "./")] = meta + "\x00" + content
	}
}

// fileDiffs lists the paths that differ between two layers' files, and
// how, sorted, at most maxDiffFiles.
func fileDiffs(orig, rebuilt map[string]string) []string {
	var out []string
	paths := map[string]bool{}
	for p := range orig {
		paths[p] = true
	}
	for p := range rebuilt {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	slices.Sort(sorted)
	for _, p := range sorted {
		o, inO := orig[p]
		r, inR := rebuilt[p]
		var how string
		switch {
		case !inR:
			how = "only in the original"
		case !inO:
			how = "only in the rebuild"
		case o == r:
			continue
		default:
			om, oc, _ := strings.Cut(o, "\x00")
			rm, rc, _ := strings.Cut(r, "\x00")
			switch {
			case oc != rc && om != rm:
				how = "content and metadata"
			case oc != rc:
				how = "content"
			default:
				how = "metadata (" + om + " / " + rm + ")"
			}
		}
		out = append(out, p+": "+how)
	}
	if len(out) > maxDiffFiles {
		out = append(out[:maxDiffFiles], fmt.Sprintf("and %d more", len(out)-maxDiffFiles))
	}
	return out
}
