package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/policy"
)

// ErrRefNotFound is returned when a repository has no branch, tag or commit
// by the requested name.
var ErrRefNotFound = errors.New("no such branch, tag or commit")

// Resolver turns a git reference (branch, tag, SHA, HEAD) into the commit
// SHA it names now, with the build's credentials for the repository.
type Resolver interface {
	Resolve(ctx context.Context, repo, ref string, auth egress.Auth) (string, error)
}

// Limits of RemoteResolver without Limits of its own: resolves at once in
// the process, and of one tenant.
const (
	DefaultResolveConcurrency          = 16
	DefaultResolveConcurrencyPerTenant = 4
)

var defaultResolveLimits = egress.NewLimiter(DefaultResolveConcurrency, DefaultResolveConcurrencyPerTenant)

// RemoteResolver resolves references by listing the remote's refs, as `git
// ls-remote` does: no clone, no fetch. Every connection it makes passes the
// host policy of package egress, checked on the addresses dialled after DNS
// resolution, redirects included: no loopback, link-local, private or
// other special addresses, and only the protocol's usual ports, unless
// allowed. Its errors name the kind of failure and never quote what the
// remote answered. The zero value applies the default policy and shares the
// default limits.
type RemoteResolver struct {
	// Allow widens the host policy for every resolve (the server's
	// allow-loopback-hosts, ...). The allowance of the request's tenant,
	// which the server passes in the context, adds to it.
	Allow egress.Allowance
	// Limits bounds the resolves that run at once, in all and per tenant;
	// a resolve waits for a slot within its context. Nil shares one limiter
	// of DefaultResolveConcurrency, DefaultResolveConcurrencyPerTenant among
	// every RemoteResolver without Limits.
	Limits *egress.Limiter
}

// Resolve implements Resolver.
func (r RemoteResolver) Resolve(ctx context.Context, repo, ref string, auth egress.Auth) (string, error) {
	t, _ := ctx.Value(resolveTenantKey{}).(resolveTenant)
	limits := r.Limits
	if limits == nil {
		limits = defaultResolveLimits
	}
	release, err := limits.Acquire(ctx, t.name)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return "", err
		}
		total, per := limits.Limits()
		return "", errResolveBusy{total, per}
	}
	defer release()
	var refs []*plumbing.Reference
	if strings.HasPrefix(repo, "file://") { // AllowInsecureGit only: a local git-upload-pack, no network
		remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{repo}})
		refs, err = remote.ListContext(ctx, &git.ListOptions{PeelingOption: git.AppendPeeled})
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			refs, err = nil, nil
		}
	} else {
		refs, err = egress.ListRefs(ctx, repo, r.Allow.Add(t.allow), auth)
	}
	if err != nil {
		return "", resolveErr(egress.Classify(err))
	}
	return pickRef(refs, ref)
}

// resolveTenant is who a resolve is for: the tenant whose share of
// concurrent resolves it takes, and what the tenant's policy adds to the
// resolver's host policy.
type resolveTenant struct {
	name  string
	allow egress.Allowance
}

type resolveTenantKey struct{}

// withResolveTenant returns ctx for resolving a ref of a request of
// tenant, whose policy adds allow to the host policy.
func withResolveTenant(ctx context.Context, tenant string, allow egress.Allowance) context.Context {
	return context.WithValue(ctx, resolveTenantKey{}, resolveTenant{tenant, allow})
}

// resolveError is a resolve that failed for a reason other than the host
// policy: its message says the kind of failure only. It carries its gRPC
// code (NotFound for a repository the remote does not have, Unavailable
// for a host that cannot be reached, ...), and unwraps to the context's
// error of a timeout or cancellation.
type resolveError struct{ f *egress.Failure }

func resolveErr(f *egress.Failure) error {
	if f.Kind == egress.KindRefused {
		var r *egress.Refused
		errors.As(f, &r)
		return &egressDenied{refused: r, cause: f}
	}
	return &resolveError{f}
}

func (e *resolveError) Error() string {
	return "could not list the refs of the repository (" + e.f.Error() + ")"
}

// Unwrap returns context.DeadlineExceeded or context.Canceled for a
// timeout or cancellation, else nothing: the cause may quote the remote.
func (e *resolveError) Unwrap() error {
	switch e.f.Kind {
	case egress.KindTimeout:
		return context.DeadlineExceeded
	case egress.KindCanceled:
		return context.Canceled
	}
	return nil
}

var resolveCodes = map[egress.Kind]codes.Code{
	egress.KindTimeout:      codes.DeadlineExceeded,
	egress.KindCanceled:     codes.Canceled,
	egress.KindConnRefused:  codes.Unavailable,
	egress.KindHostNotFound: codes.Unavailable,
	egress.KindUnreachable:  codes.Unavailable,
	egress.KindTLS:          codes.Unavailable,
	egress.KindNotFound:     codes.NotFound,
	egress.KindAuth:         codes.Unauthenticated,
	egress.KindDenied:       codes.PermissionDenied,
	egress.KindTooLarge:     codes.FailedPrecondition,
	egress.KindHostKey:      codes.FailedPrecondition,
	egress.KindBadAuth:      codes.InvalidArgument,
}

// GRPCStatus gives the error its code (status.FromError reads it).
func (e *resolveError) GRPCStatus() *status.Status {
	code, ok := resolveCodes[e.f.Kind]
	if !ok {
		code = codes.Unknown
	}
	return status.New(code, e.Error())
}

// egressDenied is a resolve the host policy refused before any connection
// was made to the refused address: PermissionDenied (it wraps a
// policy.Denied), naming git_repo and the rule.
type egressDenied struct {
	refused *egress.Refused
	cause   *egress.Failure
}

// egressHints say how a rule's refusal can be allowed.
var egressHints = map[egress.Rule]string{
	egress.RuleLoopback: "; the server's allow-loopback-hosts or a tenant's allow_loopback allows it",
	egress.RulePrivate:  "; the server's allow-private-hosts or a tenant's allow_private allows it",
	egress.RulePort:     "; the server's allowed-ports or allow-any-port, or a tenant's allowed_ports or allow_any_port, allows it",
}

func (e *egressDenied) Error() string {
	what := "is at " + e.refused.What()
	if e.refused.Rule == egress.RulePort {
		what = fmt.Sprintf("is on %s, not one of %s", e.refused.What(), e.refused.AllowedPorts())
	}
	return fmt.Sprintf("git_repo: refused by the host policy (%s): the repository's host (or one it redirects to) %s%s",
		e.refused.Rule, what, egressHints[e.refused.Rule])
}

func (e *egressDenied) Unwrap() []error {
	return []error{&policy.Denied{Field: "git_repo", Rule: string(e.refused.Rule), Reason: e.refused.Error()}, e.refused}
}

// errResolveBusy is a resolve that found no free slot before its time ran
// out.
type errResolveBusy struct{ total, perTenant int }

func (e errResolveBusy) Error() string {
	return fmt.Sprintf("the server is resolving too many refs at once (at most %d, %d per tenant); try again later", e.total, e.perTenant)
}

// GRPCStatus gives the error its code.
func (e errResolveBusy) GRPCStatus() *status.Status {
	return status.New(codes.ResourceExhausted, e.Error())
}

// resolveFailed is the error of a request whose resolve failed with err: a
// refusal of the host policy names git_repo, and so does a repository the
// remote does not have, a host that wants other credentials (naming the
// host and the kind of credential tried) or whose ssh host key is not
// known; every other failure names git_commit.
func resolveFailed(err error, creds *credentials.Build) error {
	if _, ok := errors.AsType[*egressDenied](err); ok {
		return err
	}
	if e, ok := errors.AsType[*resolveError](err); ok {
		switch e.f.Kind {
		case egress.KindAuth, egress.KindDenied:
			return &gitAuthError{resolveError: e, host: creds.RepoHostName(), tried: creds.Git}
		case egress.KindBadAuth:
			return &FieldError{Field: "git_credentials", Reason: e.f.Error()}
		case egress.KindNotFound:
			return fmt.Errorf("git_repo: %w: the remote has no such repository, or does not show it with the credentials given", err)
		case egress.KindHostKey:
			return fmt.Errorf("git_repo: %w; add the host's key to the server's known hosts or the request's git_credentials.ssh_known_hosts", err)
		}
	}
	return fmt.Errorf("git_commit: %w", err)
}

// gitAuthError is a repository host that refused the credential tried, or
// wanted one when none was given: Unauthenticated, or PermissionDenied for
// a credential that is valid but may not read the repository.
type gitAuthError struct {
	*resolveError
	host  string
	tried credentials.Git
}

func (e *gitAuthError) Error() string {
	if e.tried.IsZero() {
		return fmt.Sprintf("git_repo: %s wants credentials (%s); the server has none for this host and the request gave none (git_credentials)", e.host, e.f.Error())
	}
	verb := "did not accept"
	if e.f.Kind == egress.KindDenied {
		verb = "denied access with"
	}
	return fmt.Sprintf("git_repo: %s %s the %s (%s)", e.host, verb, e.tried.Kind(), e.f.Error())
}

// GRPCStatus gives the error its code.
func (e *gitAuthError) GRPCStatus() *status.Status {
	return status.New(resolveCodes[e.f.Kind], e.Error())
}

// resolveCause is what the server's log says of a failed resolve: the
// failure's cause, which may quote the remote (the caller never sees it)
// and names the address of a refusal.
func resolveCause(err error) string {
	var f *egress.Failure
	if e, ok := errors.AsType[*resolveError](err); ok {
		f = e.f
	}
	if e, ok := errors.AsType[*gitAuthError](err); ok {
		f = e.f
	}
	if d, ok := errors.AsType[*egressDenied](err); ok {
		f = d.cause
	}
	if f == nil || f.Unwrap() == nil {
		return ""
	}
	cause := f.Unwrap().Error()
	if len(cause) > 512 {
		cause = cause[:512] + "..."
	}
	return cause
}

// pickRef finds ref among a remote's references, the way git does: HEAD,
// then full ref names, then branches, then tags (peeled to the commit).
// A full SHA is taken as it is: BuildKit fetches it, and fails the build
// if the remote doesn't have it.
func pickRef(refs []*plumbing.Reference, ref string) (string, error) {
	byName := map[string]plumbing.Hash{}
	var headTarget plumbing.ReferenceName
	for _, r := range refs {
		switch r.Type() {
		case plumbing.HashReference:
			byName[r.Name().String()] = r.Hash()
		case plumbing.SymbolicReference:
			if r.Name() == plumbing.HEAD {
				headTarget = r.Target()
			}
		}
	}
	if h, ok := byName["HEAD"]; ok && ref == "HEAD" {
		return h.String(), nil
	}
	if ref == "HEAD" && headTarget != "" {
		if h, ok := byName[headTarget.String()]; ok {
			return h.String(), nil
		}
	}
	candidates := []string{ref, "refs/heads/" + ref, "refs/tags/" + ref}
	if strings.HasPrefix(ref, "refs/") {
		candidates = []string{ref}
	}
	for _, c := range candidates {
		// An annotated tag lists its tag object; the peeled entry is the commit.
		if h, ok := byName[c+"^{}"]; ok {
			return h.String(), nil
		}
		if h, ok := byName[c]; ok {
			return h.String(), nil
		}
	}
	if isSHA(ref) {
		return ref, nil
	}
	return "", fmt.Errorf("%q: %w", ref, ErrRefNotFound)
}
