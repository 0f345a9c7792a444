package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Method prefixes of the standard gRPC services that are usually public.
const (
	// HealthMethods is the gRPC health service.
	HealthMethods = "/grpc.health.v1.Health/"
	// ReflectionMethods is gRPC server reflection (every version).
	ReflectionMethods = "/grpc.reflection."
)

// Option configures New.
type Option func(*options) error

// options are the settings the Options set; New fills in the defaults.
type options struct {
	public         []string
	admin          []string
	insecureTokens bool
	log            *slog.Logger
}

// checkPrefixes checks full-method prefixes such as "/pkg.Service/".
func checkPrefixes(prefixes []string) error {
	if len(prefixes) == 0 {
		return errors.New("no method prefixes")
	}
	for _, p := range prefixes {
		if !strings.HasPrefix(p, "/") || len(p) < 2 {
			return fmt.Errorf("method prefix %q: want a full method name or a prefix of one, like \"/pkg.Service/\"", p)
		}
	}
	return nil
}

// WithPublicMethods opens the methods whose full name ("/pkg.Service/Method")
// starts with one of prefixes: they need no identity and their handlers
// get none, whatever credentials the call carries. Typically HealthMethods
// and ReflectionMethods. May be given more than once.
func WithPublicMethods(fullMethodPrefixes ...string) Option {
	return func(o *options) error {
		if err := checkPrefixes(fullMethodPrefixes); err != nil {
			return fmt.Errorf("public methods: %w", err)
		}
		o.public = append(o.public, fullMethodPrefixes...)
		return nil
	}
}

// WithAdminMethods restricts the methods whose full name starts with one of
// prefixes (such as "/build.v1.AdminService/") to admin callers; other callers get
// PermissionDenied. May be given more than once.
func WithAdminMethods(fullMethodPrefixes ...string) Option {
	return func(o *options) error {
		if err := checkPrefixes(fullMethodPrefixes); err != nil {
			return fmt.Errorf("admin methods: %w", err)
		}
		o.admin = append(o.admin, fullMethodPrefixes...)
		return nil
	}
}

// WithInsecureTokens accepts bearer tokens on connections without
// transport security, where anyone on the path can read and replay them.
// For tests and local development only.
func WithInsecureTokens() Option {
	return func(o *options) error {
		o.insecureTokens = true
		return nil
	}
}

// WithLogger logs refused calls (at Warn) and authenticated ones (at
// Debug) to log. Tokens are never logged. Default: no logging.
func WithLogger(log *slog.Logger) Option {
	return func(o *options) error {
		if log == nil {
			return errors.New("logger is nil")
		}
		o.log = log
		return nil
	}
}

// Authenticator checks the caller of every gRPC call against the callers
// file and puts its Identity into the call's context. Make one with New and
// install both of its interceptors on the server.
//
// A call proves its caller with a bearer token (over TLS, unless
// WithInsecureTokens), a client certificate the server's TLS verified, or
// both; with both, they must name the same caller, and the Identity's
// Method is MethodMTLS. A call that proves nothing, or proves a caller the
// callers file does not have, fails with codes.Unauthenticated; a
// non-admin calling an admin method gets codes.PermissionDenied.
type Authenticator struct {
	callers        *Callers
	public         []string
	admin          []string
	insecureTokens bool
	log            *slog.Logger
}

// New makes an Authenticator for callers. By default every method needs a
// caller, no method needs an admin, tokens are accepted only over TLS and
// nothing is logged.
func New(callers *Callers, opts ...Option) (*Authenticator, error) {
	if callers == nil || callers.Len() == 0 {
		return nil, errors.New("auth: no callers")
	}
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	for _, p := range o.public {
		for _, a := range o.admin {
			if strings.HasPrefix(p, a) || strings.HasPrefix(a, p) {
				return nil, fmt.Errorf("auth: method prefix %q is public and %q is admin: a method cannot be both", p, a)
			}
		}
	}
	return &Authenticator{
		callers:        callers,
		public:         o.public,
		admin:          o.admin,
		insecureTokens: o.insecureTokens,
		log:            o.log,
	}, nil
}

// UnaryInterceptor authenticates unary calls.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streaming calls; the handler's stream's
// Context carries the Identity.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if ctx == ss.Context() {
			return handler(srv, ss)
		}
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}

// serverStream is a grpc.ServerStream with another context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the context that carries the Identity.
func (s *serverStream) Context() context.Context { return s.ctx }

// matches says whether method starts with one of prefixes.
func matches(method string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// refusal is why a call is refused: the status the caller gets and, for
// the log, the reason and the caller a certificate or token named, if any.
type refusal struct {
	status *status.Status
	reason string
	caller string
}

// authenticate returns ctx with the caller's Identity, ctx itself for a
// public method, or the status error the call fails with.
func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	if matches(method, a.public) {
		return ctx, nil
	}
	p, _ := peer.FromContext(ctx)
	id, ref := a.identify(ctx, p)
	if ref == nil && matches(method, a.admin) && !id.Admin {
		ref = &refusal{
			status: status.New(codes.PermissionDenied, "this method is for admin callers only"),
			reason: "not an admin",
			caller: id.Name,
		}
	}
	addr := ""
	if p != nil && p.Addr != nil {
		addr = p.Addr.String()
	}
	if ref != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "call refused", slog.String("method", method),
			slog.String("peer", addr), slog.String("reason", ref.reason), slog.String("caller", ref.caller),
			slog.String("code", ref.status.Code().String()))
		return nil, ref.status.Err()
	}
	a.log.LogAttrs(ctx, slog.LevelDebug, "call authenticated", slog.String("method", method),
		slog.String("peer", addr), slog.String("caller", id.Name), slog.String("tenant", id.Tenant),
		slog.Bool("admin", id.Admin), slog.String("auth", id.Method))
	return NewContext(ctx, id), nil
}

// unauthenticated is a refusal with codes.Unauthenticated; msg goes to the
// caller, reason to the log.
func unauthenticated(msg, reason, caller string) *refusal {
	return &refusal{status: status.New(codes.Unauthenticated, msg), reason: reason, caller: caller}
}

// identify finds the caller from the verified client certificate and the
// bearer token. None of the messages it returns contain the token.
func (a *Authenticator) identify(ctx context.Context, p *peer.Peer) (Identity, *refusal) {
	var ai credentials.AuthInfo
	if p != nil {
		ai = p.AuthInfo
	}
	secure := ai != nil && credentials.CheckSecurityLevel(ai, credentials.PrivacyAndIntegrity) == nil

	certIdx, haveCert := -1, false
	if ti, ok := ai.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		haveCert = true
		switch m := a.callers.byCert(ti.State.VerifiedChains[0][0]); len(m) {
		case 0:
			return Identity{}, unauthenticated("client certificate matches no caller", "certificate matches no caller", "")
		case 1:
			certIdx = m[0]
		default:
			return Identity{}, unauthenticated("client certificate matches more than one caller",
				"certificate matches more than one caller", "")
		}
	}

	token, haveToken, err := bearerToken(ctx)
	if err != nil {
		return Identity{}, unauthenticated(err.Error(), err.Error(), "")
	}
	tokenIdx := -1
	if haveToken {
		if !secure && !a.insecureTokens {
			return Identity{}, unauthenticated("bearer token refused: the connection has no transport security (TLS)",
				"bearer token without TLS", "")
		}
		i, ok := a.callers.byToken(token)
		if !ok {
			return Identity{}, unauthenticated("invalid bearer token", "invalid bearer token", "")
		}
		tokenIdx = i
	}

	switch {
	case haveCert && haveToken && certIdx != tokenIdx:
		return Identity{}, unauthenticated("bearer token and client certificate name different callers",
			"token and certificate disagree", a.callers.list[certIdx].id.Name)
	case haveCert:
		id := a.callers.list[certIdx].id
		id.Method = MethodMTLS
		return id, nil
	case haveToken:
		id := a.callers.list[tokenIdx].id
		id.Method = MethodToken
		return id, nil
	}
	return Identity{}, unauthenticated(`no credentials: send "authorization: Bearer <token>" or a client certificate`,
		"no credentials", "")
}

// bearerToken returns the token of the call's "authorization: Bearer"
// header, and whether there is one. Its errors never contain the header.
func bearerToken(ctx context.Context) (string, bool, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, errors.New("more than one authorization header")
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false, errors.New(`authorization header is not "Bearer <token>"`)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", false, errors.New("empty bearer token")
	}
	return token, true, nil
}
