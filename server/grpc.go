package server

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits of the gRPC server that serves the build service.
const (
	// MaxConcurrentStreams is how many calls one connection may have open
	// at once (streams that watch builds included).
	MaxConcurrentStreams = 256
	// KeepaliveTime is how long a connection may be quiet before the server
	// pings it; KeepaliveTimeout how long the server then waits for the
	// answer before it closes the connection. A watcher whose client is gone
	// is dropped within their sum.
	KeepaliveTime    = time.Minute
	KeepaliveTimeout = 20 * time.Second
	// MaxConnectionIdle closes connections with no call for this long.
	MaxConnectionIdle = 30 * time.Minute
	// HandshakeTimeout bounds a new connection's handshake (TLS included).
	HandshakeTimeout = 10 * time.Second
	// EventCacheBytes bounds the encoded events kept for the streams that
	// send them.
	EventCacheBytes = 32 << 20
)

// GRPCServerOptions are the options the build service's gRPC server needs
// on top of its credentials and interceptors: a bound on a request
// message's size, on the streams of one connection, and keepalive, so that
// no client holds the server's memory or goroutines without bound. A watcher
// that reads slowly holds at most gRPC's flow-control window of unsent
// events: every watcher reads the one event log of a build through its own
// cursor, and the log never waits for it. Each event of a log is encoded
// once for all the streams that send it (eventCodec).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newEventCodec(EventCacheBytes)),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: MaxConnectionIdle,
			Time:              KeepaliveTime,
			Timeout:           KeepaliveTimeout,
		}),
		// Clients may ping every 10 s, also while no call is open (the CLI
		// pings while it follows a long build).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}
