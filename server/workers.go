package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/workers"
)

// WorkerPool gives each build a worker of p (for Config.Builders): the
// first with room in the order rendezvous hashing on the build's
// repository gives, so that a repository's caches stay hot on one worker.
// A build whose worker is lost before its push is run once more, on the
// next worker; the server's cleanup prunes every healthy worker.
func WorkerPool(p *workers.Pool[BuildKitClient]) Builders { return &poolBuilders{p: p} }

type poolBuilders struct{ p *workers.Pool[BuildKitClient] }

// Acquire implements Builders.
func (pb *poolBuilders) Acquire(ctx context.Context, req BuilderRequest) (*Builder, error) {
	l, err := pb.p.Acquire(ctx, req.Key, req.Avoid, req.Waiting)
	if err != nil {
		return nil, err
	}
	return &Builder{Client: l.Conn, Name: l.Name, Release: func(_ context.Context, lost bool) error {
		if lost {
			l.Release(workers.Lost)
		} else {
			l.Release(workers.Done)
		}
		return nil
	}}, nil
}

// retriesLost reports that a build lost with its worker may run again on
// another: the pool's workers outlive a build.
func (pb *poolBuilders) retriesLost() bool { return true }

// eachBuilder calls fn with every healthy worker (the cleanup's prune).
func (pb *poolBuilders) eachBuilder(ctx context.Context, fn func(ctx context.Context, name string, c BuildKitClient) error) error {
	return pb.p.Each(ctx, fn)
}

// Status lists the pool's workers.
func (pb *poolBuilders) status() []workers.Status { return pb.p.Status() }

// builderGone reports whether err says the connection to buildkitd broke
// during a solve (the daemon died, or its host did): gRPC's Unavailable,
// or the stream's end, as BuildKit's client returns them.
func builderGone(err error) bool {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// errBuilderLost is a build whose buildkitd went away during the solve.
type errBuilderLost struct {
	builder string
	pushing bool // the image's push had begun
	retried bool // it was the second worker the build lost
	err     error
}

func (e errBuilderLost) Error() string {
	switch {
	case e.pushing:
		return fmt.Sprintf("the builder (buildkitd %s) was lost while pushing the image, so the build was not run again (the push may be incomplete): %v", e.builder, e.err)
	case e.retried:
		return fmt.Sprintf("the builder (buildkitd %s) was lost during the build, the second builder the build lost: %v", e.builder, e.err)
	}
	return fmt.Sprintf("the builder (buildkitd %s) was lost during the build: %v", e.builder, e.err)
}

func (e errBuilderLost) Unwrap() error { return e.err }

// GRPCStatus gives the error its code.
func (e errBuilderLost) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}
