package main

import (
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/buildsvc/buildsvc/audit"
	"github.com/buildsvc/buildsvc/auth"
)

// securityOptions are the gRPC server options of cfg's security settings:
// TLS credentials, and the interceptors that authenticate every call
// (health always open, reflection by config, Admin for admins only) and
// write the audit log.
func securityOptions(cfg config, log *slog.Logger) ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if cfg.TLSCert != "" {
		tcfg, err := auth.TLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tcfg)))
	}
	aud := audit.New(log.With("component", "audit"))
	unary := []grpc.UnaryServerInterceptor{}
	stream := []grpc.StreamServerInterceptor{}
	if cfg.CallersFile != "" {
		callers, err := auth.LoadCallers(cfg.CallersFile)
		if err != nil {
			return nil, fmt.Errorf("callers: %w", err)
		}
		public := []string{auth.HealthMethods}
		if cfg.PublicReflection {
			public = append(public, auth.ReflectionMethods)
		}
		aopts := []auth.Option{
			auth.WithPublicMethods(public...),
			auth.WithAdminMethods("/build.v1.AdminService/"),
			auth.WithLogger(log.With("component", "auth")),
		}
		if cfg.InsecureTokens {
			aopts = append(aopts, auth.WithInsecureTokens())
		}
		a, err := auth.New(callers, aopts...)
		if err != nil {
			return nil, fmt.Errorf("callers: %w", err)
		}
		// The audit log sees every call, also the refused ones: it comes
		// first, and reads the identity authentication adds.
		unary = append(unary, aud.UnaryInterceptor(), a.UnaryInterceptor(), aud.UnaryIdentity())
		stream = append(stream, aud.StreamInterceptor(), a.StreamInterceptor(), aud.StreamIdentity())
		log.Info("authentication on", "callers", callers.Len(), "public_reflection", cfg.PublicReflection)
	} else {
		unary = append(unary, aud.UnaryInterceptor())
		stream = append(stream, aud.StreamInterceptor())
		log.Warn("authentication off: every caller is an admin (set --callers)")
	}
	return append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)), nil
}
