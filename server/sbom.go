package server

import (
	"context"
	"fmt"
	"io"
	"path"
	"time"

	bkllb "github.com/moby/buildkit/client/llb"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/result"

	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/sbom"
	"github.com/buildsvc/buildsvc/version"
)

// sbomPath is where the SBOM's own state holds the document.
const sbomPath = "/sbom.spdx.json"

// sbomAttestation is the SPDX SBOM of the binary of spec in ref (one
// platform's image), as an in-toto attestation of that image: the binary's
// build info is read from the image through the gateway (a few ranged
// reads, not the whole binary), the document made here, and put in a
// state of its own for the exporter.
func sbomAttestation(ctx context.Context, c gateway.Client, ref gateway.Reference, spec llb.Spec, platform, name string, epoch time.Time) (*gateway.Attestation, error) {
	bin := path.Join(llb.BinDir, spec.Binary)
	bi, err := sbom.Read(&refReaderAt{ctx: ctx, ref: ref, path: bin})
	if err != nil {
		return nil, fmt.Errorf("SBOM of %s: %w", platform, err)
	}
	dt, err := sbom.Document(bi, sbom.Source{Repo: spec.Repo, Commit: spec.Commit, Dir: spec.Dir},
		sbom.Target{Name: name, Platform: platform, Created: epoch, Creator: "buildsvc " + version.Get().Version})
	if err != nil {
		return nil, fmt.Errorf("SBOM of %s: %w", platform, err)
	}
	def, err := bkllb.Scratch().File(bkllb.Mkfile(sbomPath, 0o444, dt, bkllb.WithCreatedTime(epoch)),
		bkllb.WithCustomNamef("SBOM of %s (%d packages)", platform, len(bi.Deps)+2)).Marshal(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true})
	if err != nil {
		return nil, fmt.Errorf("SBOM of %s: %w", platform, err)
	}
	sref, err := res.SingleRef()
	if err != nil {
		return nil, err
	}
	return &gateway.Attestation{
		Kind:   gatewaypb.AttestationKind_InToto,
		Ref:    sref,
		Path:   sbomPath,
		InToto: result.InTotoAttestation{PredicateType: sbom.PredicateType},
	}, nil
}

// refReaderAt reads a file of a gateway reference at offsets, a read
// request each.
type refReaderAt struct {
	ctx  context.Context
	ref  gateway.Reference
	path string
}

// ReadAt implements io.ReaderAt.
func (r *refReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	dt, err := r.ref.ReadFile(r.ctx, gateway.ReadRequest{Filename: r.path, Range: &gateway.FileRange{Offset: int(off), Length: len(p)}})
	if err != nil {
		return 0, err
	}
	n := copy(p, dt)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
