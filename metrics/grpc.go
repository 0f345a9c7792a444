package metrics

import (
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// grpcHandlingBuckets are the buckets of grpc_server_handling_seconds: a
// unary call takes milliseconds, a CreateImage or WatchBuild stream as long
// as its build.
var grpcHandlingBuckets = []float64{0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600, 1800}

// NewGRPCServerMetrics returns the gRPC server's metrics, registered on reg:
// go-grpc-middleware's Prometheus provider, with grpc_server_started_total,
// grpc_server_handled_total (by grpc_code), grpc_server_msg_received_total,
// grpc_server_msg_sent_total and grpc_server_handling_seconds, each by
// grpc_type, grpc_service and grpc_method. Put its interceptors before any
// other (so refused calls are counted too) and call InitializeMetrics with
// the server once its services are registered (so every method shows 0).
func NewGRPCServerMetrics(reg prometheus.Registerer) (*grpcprom.ServerMetrics, error) {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(grpcHandlingBuckets)))
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}
