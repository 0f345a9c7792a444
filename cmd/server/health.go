package main

import (
	"log/slog"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// healthServices are the names the health service answers for: the whole
// server ("") and each service. All of them need buildkitd, so they share
// one status.
var healthServices = []string{"", buildv1.Build_ServiceDesc.ServiceName, buildv1.AdminService_ServiceDesc.ServiceName}

// healthReporter turns buildkitd's reachability into the gRPC health
// status, and logs each change.
type healthReporter struct {
	hs  *health.Server
	log *slog.Logger
}

// newHealthReporter returns a reporter whose services start NOT_SERVING.
func newHealthReporter(log *slog.Logger) *healthReporter {
	r := &healthReporter{hs: health.NewServer(), log: log}
	r.set(healthpb.HealthCheckResponse_NOT_SERVING)
	return r
}

// buildkitdChanged is a buildkitd.MonitorConfig.OnChange.
func (r *healthReporter) buildkitdChanged(up bool, err error) {
	if up {
		r.log.Info("buildkitd answers; health SERVING")
		r.set(healthpb.HealthCheckResponse_SERVING)
		return
	}
	r.log.Warn("buildkitd does not answer; health NOT_SERVING", "err", err)
	r.set(healthpb.HealthCheckResponse_NOT_SERVING)
}

func (r *healthReporter) set(s healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range healthServices {
		r.hs.SetServingStatus(name, s)
	}
}

// shutdown reports NOT_SERVING for good: later changes are ignored.
func (r *healthReporter) shutdown() { r.hs.Shutdown() }
