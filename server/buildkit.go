package server

import (
	"context"

	"github.com/moby/buildkit/client"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
)

// BuildKitClient is what the server asks of buildkitd: the calls it makes
// on a BuildKit client, which *client.Client (what buildkitd.Dial returns)
// satisfies. Another implementation (a fake in unit tests, a pool of
// daemons) must behave as BuildKit's client does; in particular Build
// closes statusChan before it returns.
type BuildKitClient interface {
	// Build runs buildFunc as a gateway build, exports its result as opt
	// says, and sends the solve's progress on statusChan, which it closes
	// when the build is over.
	Build(ctx context.Context, opt client.SolveOpt, product string, buildFunc gateway.BuildFunc, statusChan chan *client.SolveStatus) (*client.SolveResponse, error)
	// ListWorkers lists the daemon's workers (their platforms).
	ListWorkers(ctx context.Context, opts ...client.ListWorkersOption) ([]*client.WorkerInfo, error)
	// Prune removes cache records as opts say and sends each removed one
	// on ch; it does not close ch.
	Prune(ctx context.Context, ch chan client.UsageInfo, opts ...client.PruneOption) error
	// DiskUsage lists the daemon's cache records (a pool's health check
	// sums them).
	DiskUsage(ctx context.Context, opts ...client.DiskUsageOption) ([]*client.UsageInfo, error)
	// Close ends the connection.
	Close() error
}

var _ BuildKitClient = (*client.Client)(nil)
