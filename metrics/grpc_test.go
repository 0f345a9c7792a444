package metrics_test

import (
	"context"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/metrics"
)

// The gRPC server metrics count real calls by method and code, and every
// registered method is there with 0 before it is called.
func TestGRPCServerMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	gm, err := metrics.NewGRPCServerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(gm.StreamServerInterceptor()))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	gm.InitializeMetrics(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	for range 2 {
		if _, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "no.such.Service"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v", err)
	}
	got, err := testutil.GatherAndCount(reg, "grpc_server_handled_total")
	if err != nil {
		t.Fatal(err)
	}
	if got < 2 {
		t.Errorf("grpc_server_handled_total has %d series, want OK and NotFound for Check at least", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"OK": 2, "NotFound": 1}
	seen := map[string]float64{}
	watchInitialized := false
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["grpc_method"] == "Check" {
				seen[l["grpc_code"]] = m.GetCounter().GetValue()
			}
			if l["grpc_method"] == "Watch" && l["grpc_code"] == "OK" && m.GetCounter().GetValue() == 0 {
				watchInitialized = true
			}
		}
	}
	for code, n := range want {
		if seen[code] != n {
			t.Errorf("Check %s handled = %v, want %v (all: %v)", code, seen[code], n, seen)
		}
	}
	if !watchInitialized {
		t.Error("the uncalled Watch method has no 0 series: InitializeMetrics did not run")
	}
}
