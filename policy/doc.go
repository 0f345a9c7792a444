// Package policy says what a build request may ask for. It holds the rules
// the server applies before anything is queued: which `go build` flags,
// linker flags and environment variables a build may set (an allow-list:
// what is not known to be safe is refused, and a tenant's policy may widen
// it), and, per tenant, which git hosts, image tags, base images and
// server-side credentials it may use and how many builds it may run.
//
// It is pure: no I/O, no clock, no gRPC. The server turns its errors into
// InvalidArgument or PermissionDenied naming the request field.
package policy
