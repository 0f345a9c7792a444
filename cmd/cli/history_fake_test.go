package main

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// historyFake is a fakeServer whose GetBuild and CancelBuild answer from
// its builds by id, NotFound for any other id, as the server does; the
// other calls are fakeServer's.
type historyFake struct {
	*fakeServer
}

func (h historyFake) GetBuild(_ context.Context, req *buildv1.GetBuildRequest) (*buildv1.BuildInfo, error) {
	h.record(req)
	return h.lookup(req.GetBuildId())
}

func (h historyFake) CancelBuild(_ context.Context, req *buildv1.CancelBuildRequest) (*buildv1.CancelBuildResponse, error) {
	h.record(req)
	info, err := h.lookup(req.GetBuildId())
	if err != nil {
		return nil, err
	}
	return &buildv1.CancelBuildResponse{Build: info}, nil
}

func (h historyFake) lookup(id string) (*buildv1.BuildInfo, error) {
	for _, b := range h.builds {
		if b.GetBuildId() == id {
			return b, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "build %q: build not found", id)
}

// start serves h on a loopback port and returns its address.
func (h historyFake) start(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	buildv1.RegisterBuildServer(s, h)
	go func() { _ = s.Serve(&trackingListener{Listener: lis, f: h.fakeServer}) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}
