// Package auth authenticates the callers of the build service's gRPC API
// and tells handlers who is calling.
//
// A callers file (see ParseCallers) lists every identity that may call: a
// name, a tenant, whether it is an admin, and how it proves itself, with a
// bearer token (only its SHA-256 is stored) or a client certificate
// issued by the CA the server trusts for clients, or both. An Authenticator
// holds those callers and supplies the gRPC interceptors that check every
// call: public methods (health, reflection) need nothing, every other
// method needs a known caller, and admin methods need an admin. Handlers
// read the caller with FromContext.
//
// The server wires it like this, with TLS so that tokens travel encrypted:
//
//	callers, err := auth.LoadCallers(callersFile)
//	...
//	a, err := auth.New(callers,
//		auth.WithPublicMethods(auth.HealthMethods, auth.ReflectionMethods),
//		auth.WithAdminMethods("/build.v1.AdminService/"),
//		auth.WithLogger(log.With("component", "auth")))
//	...
//	tlsConfig, err := auth.TLSConfig(certFile, keyFile, clientCAFile)
//	...
//	gs := grpc.NewServer(
//		grpc.Creds(credentials.NewTLS(tlsConfig)),
//		grpc.ChainUnaryInterceptor(a.UnaryInterceptor()),
//		grpc.ChainStreamInterceptor(a.StreamInterceptor()))
//
// Clients send their token with TokenCredentials, read from a file that
// only its owner can read with ReadTokenFile.
package auth
