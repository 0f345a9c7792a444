package auth

import "context"

// How an Identity was authenticated: its Method.
const (
	// MethodToken is a bearer token.
	MethodToken = "token"
	// MethodMTLS is a verified client certificate (with or without a
	// token naming the same caller).
	MethodMTLS = "mtls"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name is the caller's name in the callers file.
	Name string
	// Tenant is the tenant the caller acts for; it may be empty for an
	// admin.
	Tenant string
	// Admin callers may call the admin methods.
	Admin bool
	// Method is how the caller proved itself: MethodToken or MethodMTLS.
	Method string
}

// ctxKey is the context key of the Identity.
type ctxKey struct{}

// NewContext returns a copy of ctx that carries id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the Identity ctx carries, and whether it carries one.
// Calls of public methods carry none.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
