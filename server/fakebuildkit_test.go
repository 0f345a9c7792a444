package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	commonexptypes "github.com/moby/buildkit/exporter/exptypes"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/grpcerrors"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	fstypes "github.com/tonistiigi/fsutil/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeBuildKit is a BuildKitClient for unit tests of the server's own
// logic (queue, lifecycle, persistence): it runs the server's gateway
// BuildFunc against fakeGateway, whose solves do nothing but report
// progress, and answers with an image digest. Integration tests use the
// real buildkitd.
//
// Its knobs are set before the server starts and not changed after.
type fakeBuildKit struct {
	// listErr, if set, is what ListWorkers fails with; workers, if set,
	// what it answers (one linux/amd64 worker if nil).
	listErr error
	workers []*client.WorkerInfo
	// buildErr, if set, is what Build fails with before running the
	// build function (buildkitd gone mid-call).
	buildErr error
	// resolveErr, if set, is what ResolveImageConfig fails with.
	resolveErr error
	// fail, if set, says what the attempt-th (0 first) final solve of the
	// image tag fails with; nil succeeds.
	fail func(tag string, attempt int) error
	// output, if set, is what the compile step prints in the attempt-th
	// final solve of tag.
	output func(tag string, attempt int) string
	// hold makes every final solve wait until the test sends on release
	// (the solve then ends with what was sent, nil for success) or its
	// context ends.
	hold bool
	// noDigest makes Build answer without an image digest.
	noDigest bool
	// pushErr, if set, is what Build fails with after the build function
	// returned, as the export pushes (buildkitd gone mid-push).
	pushErr error
	// commitTime is what StatFile gives the fetched commit's root.
	commitTime time.Time
	// pruneRecords are what every Prune reports removed.
	pruneRecords []client.UsageInfo

	started chan string // the tag of every final solve, as it starts
	release chan error
	// gone is closed when the test ends: held solves fail then, so that a
	// server whose cancellation is broken still closes.
	gone     chan struct{}
	goneOnce sync.Once

	mu        sync.Mutex
	builds    []string            // tags, in the order their final solves started
	cancelled []string            // tags of final solves whose context ended first
	epochs    map[string]string   // tag -> the SOURCE_DATE_EPOCH the result carried
	resolved  map[string][]string // tag -> image refs whose config it resolved
	defs      []digest.Digest     // of the ops of the final solves, in order
	pbDefs    []*pb.Definition    // the final solves' definitions, in order
	prunes    []client.PruneInfo  // the options of every Prune
	sessions  [][]session.Attachable
	closed    bool
}

func newFakeBuildKit() *fakeBuildKit {
	return &fakeBuildKit{
		commitTime: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		started:    make(chan string, 64),
		release:    make(chan error),
		gone:       make(chan struct{}),
		epochs:     map[string]string{},
		resolved:   map[string][]string{},
	}
}

// fakeDigest is the digest the fake gives the image of tag.
func fakeDigest(tag string) string {
	h := sha256.Sum256([]byte(tag))
	return "sha256:" + hex.EncodeToString(h[:])
}

// exitError is the error of a build step that exited with code, as the
// BuildKit client returns it: a typed error sent across gRPC and rebuilt.
func exitError(vertex digest.Digest, code uint32) error {
	err := errdefs.WrapVertex(&gatewaypb.ExitError{ExitCode: code,
		Err: fmt.Errorf(`process "/bin/sh -c go build" did not complete successfully: exit code: %d`, code)}, vertex)
	return grpcerrors.FromGRPC(grpcerrors.ToGRPC(context.Background(), err))
}

// ListWorkers implements BuildKitClient.
func (f *fakeBuildKit) ListWorkers(context.Context, ...client.ListWorkersOption) ([]*client.WorkerInfo, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	if f.workers != nil {
		return f.workers, nil
	}
	return []*client.WorkerInfo{{ID: "fake", Platforms: []ocispecs.Platform{{OS: "linux", Architecture: "amd64"}}}}, nil
}

// Prune implements BuildKitClient: it records its options and reports
// pruneRecords removed.
func (f *fakeBuildKit) Prune(ctx context.Context, ch chan client.UsageInfo, opts ...client.PruneOption) error {
	var info client.PruneInfo
	for _, o := range opts {
		o.SetPruneOption(&info)
	}
	f.mu.Lock()
	f.prunes = append(f.prunes, info)
	f.mu.Unlock()
	for _, u := range f.pruneRecords {
		select {
		case ch <- u:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close implements BuildKitClient.
func (f *fakeBuildKit) DiskUsage(context.Context, ...client.DiskUsageOption) ([]*client.UsageInfo, error) {
	return nil, nil
}

func (f *fakeBuildKit) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// Build implements BuildKitClient: it runs buildFunc with a fakeGateway
// and, as BuildKit's client does, closes statusChan before it returns.
func (f *fakeBuildKit) Build(ctx context.Context, opt client.SolveOpt, _ string, buildFunc gateway.BuildFunc, statusChan chan *client.SolveStatus) (*client.SolveResponse, error) {
	defer close(statusChan)
	if f.buildErr != nil {
		return nil, f.buildErr
	}
	if len(opt.Exports) != 1 || opt.Exports[0].Type != client.ExporterImage || opt.Exports[0].Attrs["push"] != "true" {
		return nil, fmt.Errorf("fake: want one pushed image export, got %+v", opt.Exports)
	}
	tag := opt.Exports[0].Attrs["name"]
	f.mu.Lock()
	f.sessions = append(f.sessions, opt.Session)
	f.mu.Unlock()
	g := &fakeGateway{f: f, tag: tag, status: statusChan}
	res, err := buildFunc(ctx, g)
	if err != nil {
		return nil, err
	}
	if res == nil || res.Ref == nil {
		return nil, errors.New("fake: the build function returned no result")
	}
	f.mu.Lock()
	f.epochs[tag] = string(res.Metadata[commonexptypes.ExporterEpochKey])
	f.mu.Unlock()
	// The export and push come after the build function, as BuildKit's do.
	g.send(&client.SolveStatus{Vertexes: []*client.Vertex{vertex("exporting to image", true, "")}})
	if f.pushErr != nil {
		return nil, f.pushErr
	}
	if f.noDigest {
		return &client.SolveResponse{ExporterResponse: map[string]string{}}, nil
	}
	return &client.SolveResponse{ExporterResponse: map[string]string{exptypes.ExporterImageDigestKey: fakeDigest(tag)}}, nil
}

// fakeGateway is the gateway client of one fake build.
type fakeGateway struct {
	f      *fakeBuildKit
	tag    string
	status chan *client.SolveStatus
}

func (g *fakeGateway) send(st *client.SolveStatus) { g.status <- st }

// compileDigest is the digest of the fake's compile step.
var compileDigest = digest.FromString("fake compile")

func vertex(name string, done bool, errText string) *client.Vertex {
	now := time.Now()
	v := &client.Vertex{Digest: digest.FromString(name), Name: name, Started: &now, Error: errText}
	if name == compileName {
		v.Digest = compileDigest
	}
	if done {
		v.Completed = &now
	}
	return v
}

// compileName is the name of the fake's compile step (llb's "go build
// <package>").
const compileName = "go build ./cmd/app"

// Solve implements gateway.Client. A solve that is not evaluated is
// commitEpoch's fetch of the source; an evaluated one is the build.
func (g *fakeGateway) Solve(ctx context.Context, req gateway.SolveRequest) (*gateway.Result, error) {
	if req.Definition == nil || len(req.Definition.Def) == 0 {
		return nil, errors.New("fake: solve without a definition")
	}
	res := gateway.NewResult()
	res.SetRef(&fakeRef{commitTime: g.f.commitTime})
	if !req.Evaluate {
		return res, nil
	}
	f := g.f
	f.mu.Lock()
	attempt := 0
	for _, t := range f.builds {
		if t == g.tag {
			attempt++
		}
	}
	f.builds = append(f.builds, g.tag)
	// The ops, not the metadata: its map is marshalled in no set order.
	f.defs = append(f.defs, digest.FromBytes(bytes.Join(req.Definition.Def, nil)))
	f.pbDefs = append(f.pbDefs, req.Definition)
	f.mu.Unlock()
	var err error
	f.started <- g.tag

	g.send(&client.SolveStatus{Vertexes: []*client.Vertex{vertex(compileName, false, "")}})
	out := "compiling\n"
	if f.output != nil {
		out = f.output(g.tag, attempt)
	}
	g.send(&client.SolveStatus{Logs: []*client.VertexLog{{Vertex: compileDigest, Stream: 1, Data: []byte(out), Timestamp: time.Now()}}})
	if f.fail != nil {
		err = f.fail(g.tag, attempt)
	}
	if f.hold && err == nil {
		select {
		case err = <-f.release:
		case <-f.gone:
			err = errors.New("fake: the test ended while the solve was held")
		case <-ctx.Done():
			f.mu.Lock()
			f.cancelled = append(f.cancelled, g.tag)
			f.mu.Unlock()
			// What the client gets from buildkitd for a cancelled solve.
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if err != nil {
		g.send(&client.SolveStatus{Vertexes: []*client.Vertex{vertex(compileName, true, err.Error())}})
		return nil, err
	}
	g.send(&client.SolveStatus{Vertexes: []*client.Vertex{vertex(compileName, true, "")}})
	return res, nil
}

// fakeImageConfig is the config of every image the fake resolves.
const fakeImageConfig = `{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/go/bin:/usr/bin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[]}}`

// ResolveImageConfig implements gateway.Client.
func (g *fakeGateway) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	if g.f.resolveErr != nil {
		return "", "", nil, g.f.resolveErr
	}
	g.f.mu.Lock()
	g.f.resolved[g.tag] = append(g.f.resolved[g.tag], ref)
	g.f.mu.Unlock()
	return ref, digest.FromString(ref), []byte(fakeImageConfig), nil
}

// ResolveSourceMetadata implements gateway.Client, for images only.
func (g *fakeGateway) ResolveSourceMetadata(ctx context.Context, op *pb.SourceOp, opt sourceresolver.Opt) (*sourceresolver.MetaResponse, error) {
	ref, ok := strings.CutPrefix(op.GetIdentifier(), "docker-image://")
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "fake: no metadata of %s", op.GetIdentifier())
	}
	_, dgst, cfg, err := g.ResolveImageConfig(ctx, ref, opt)
	if err != nil {
		return nil, err
	}
	return &sourceresolver.MetaResponse{Op: op, Image: &sourceresolver.ResolveImageResponse{Digest: dgst, Config: cfg}}, nil
}

// BuildOpts implements gateway.Client.
func (g *fakeGateway) BuildOpts() gateway.BuildOpts { return gateway.BuildOpts{Product: "fake"} }

// Inputs implements gateway.Client: the server's builds have none.
func (g *fakeGateway) Inputs(context.Context) (map[string]llb.State, error) { return nil, nil }

// NewContainer implements gateway.Client; the server never runs one.
func (g *fakeGateway) NewContainer(context.Context, gateway.NewContainerRequest) (gateway.Container, error) {
	return nil, status.Error(codes.Unimplemented, "fake: no containers")
}

// Warn implements gateway.Client.
func (g *fakeGateway) Warn(context.Context, digest.Digest, string, gateway.WarnOpts) error {
	return nil
}

// fakeRef is the result of a fake solve: the commit's root directory,
// whose time is the commit's.
type fakeRef struct{ commitTime time.Time }

func (r *fakeRef) ToState() (llb.State, error)    { return llb.Scratch(), nil }
func (r *fakeRef) Evaluate(context.Context) error { return nil }
func (r *fakeRef) ReadFile(context.Context, gateway.ReadRequest) ([]byte, error) {
	return nil, status.Error(codes.NotFound, "fake: no files")
}
func (r *fakeRef) ReadDir(context.Context, gateway.ReadDirRequest) ([]*fstypes.Stat, error) {
	return nil, nil
}
func (r *fakeRef) StatFile(_ context.Context, req gateway.StatRequest) (*fstypes.Stat, error) {
	if req.Path != "." {
		return nil, status.Errorf(codes.NotFound, "fake: no %s", req.Path)
	}
	return &fstypes.Stat{Path: ".", Mode: 0o040755, ModTime: r.commitTime.UnixNano()}, nil
}

// stop fails the solves held now or later.
func (f *fakeBuildKit) stop() { f.goneOnce.Do(func() { close(f.gone) }) }

// snapshot returns what the fake has seen so far.
func (f *fakeBuildKit) snapshot() (builds, cancelled []string, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.builds...), append([]string(nil), f.cancelled...), f.closed
}
