// Package audit writes one structured log record for every call of the
// gRPC API: who called (identity and tenant, or that the call carried none),
// what (the full method and the build it named), from where (the peer's
// address), and how it ended (the gRPC code). A record never holds request
// content beyond a build id, so no secret a request carries (a credential in
// a refused URL, a token) reaches the log.
//
// The server chains three interceptors: Log's Unary/StreamInterceptor first,
// then authentication, then Log's Unary/StreamIdentity, which hands the
// identity authentication found to the record. Calls refused by
// authentication are logged too, as unauthenticated.
package audit

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/auth"
)

// maxMessage is how much of an error message a record keeps.
const maxMessage = 300

// Log writes audit records to a logger.
type Log struct {
	log *slog.Logger
}

// New returns a Log writing to log (a nil log discards).
func New(log *slog.Logger) *Log {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Log{log: log}
}

// record is what one call's record gathers while the call runs.
type record struct {
	id      auth.Identity
	hasID   bool
	buildID string
}

type recordKey struct{}

// buildIDer is a request or response that names a build.
type buildIDer interface{ GetBuildId() string }

// UnaryInterceptor logs every unary call when it returns. Put it before
// authentication.
func (l *Log) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rec := &record{}
		if b, ok := req.(buildIDer); ok {
			rec.buildID = b.GetBuildId()
		}
		began := time.Now()
		resp, err := handler(context.WithValue(ctx, recordKey{}, rec), req)
		if b, ok := resp.(buildIDer); ok && rec.buildID == "" && err == nil {
			rec.buildID = b.GetBuildId()
		}
		l.write(ctx, info.FullMethod, rec, began, err)
		return resp, err
	}
}

// StreamInterceptor logs every streaming call when it ends. Put it before
// authentication.
func (l *Log) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rec := &record{}
		began := time.Now()
		err := handler(srv, &stream{ServerStream: ss, ctx: context.WithValue(ss.Context(), recordKey{}, rec), rec: rec})
		l.write(ss.Context(), info.FullMethod, rec, began, err)
		return err
	}
}

// UnaryIdentity hands the caller's identity to the call's record. Put it
// after authentication.
func (l *Log) UnaryIdentity() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		noteIdentity(ctx)
		return handler(ctx, req)
	}
}

// StreamIdentity is UnaryIdentity for streaming calls.
func (l *Log) StreamIdentity() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		noteIdentity(ss.Context())
		return handler(srv, ss)
	}
}

func noteIdentity(ctx context.Context) {
	rec, ok := ctx.Value(recordKey{}).(*record)
	if !ok {
		return
	}
	rec.id, rec.hasID = auth.FromContext(ctx)
}

// stream carries the record in its context and notes the build the first
// request message names.
type stream struct {
	grpc.ServerStream
	ctx context.Context
	rec *record
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if b, ok := m.(buildIDer); ok && err == nil && s.rec.buildID == "" {
		s.rec.buildID = b.GetBuildId()
	}
	return err
}

func (l *Log) write(ctx context.Context, method string, rec *record, began time.Time, err error) {
	code := status.Code(err)
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("duration", time.Since(began).Round(time.Millisecond)),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if rec.hasID {
		attrs = append(attrs, slog.String("caller", rec.id.Name), slog.String("tenant", rec.id.Tenant),
			slog.Bool("admin", rec.id.Admin), slog.String("auth", rec.id.Method))
	} else {
		attrs = append(attrs, slog.String("caller", ""))
	}
	if rec.buildID != "" {
		attrs = append(attrs, slog.String("build", rec.buildID))
	}
	level := slog.LevelInfo
	if err != nil {
		// The message of a refusal names the field and the rule; it never
		// holds a credential (see server.FieldError, auth).
		msg := status.Convert(err).Message()
		if len(msg) > maxMessage {
			msg = msg[:maxMessage] + "..."
		}
		attrs = append(attrs, slog.String("error", msg))
		level = slog.LevelWarn
	}
	l.log.LogAttrs(ctx, level, "call", attrs...)
}
