// Package history stores builds: each build's record and its append-only
// event log, so that builds, their logs and their errors outlive the server
// process.
//
// Two stores implement Store, with the same semantics (one contract test
// suite, history/storetest, runs against both):
//
//   - Bolt, the default, is a single bbolt file under the server's data
//     directory. bbolt is pure Go (no cgo, one static binary), needs no
//     setup, gives ACID transactions, and keeps keys sorted, which is exactly
//     what the two reads need: a build's events by sequence number, and
//     builds newest first (build ids sort by creation time). It is
//     maintained by the etcd project. Only one process can open the file:
//     choose it for one server, which is the usual case.
//   - Postgres keeps the history in a PostgreSQL database (pgx; its schema
//     is migrated on open). Choose it when the history must live off the
//     server's disk (managed backups, point-in-time recovery, a server
//     without a persistent volume) or where PostgreSQL is what operators
//     already run and watch. It costs a round trip per call, and appends
//     keep up with BuildKit by far (docs/performance.md). It is also the
//     way to one history for several replicas, but the server still
//     assumes that it alone writes its history (at start it marks every
//     build left running as interrupted): give each server a database, or
//     a schema (search_path in the DSN), of its own until it does not.
//
// Neither store rewrites a build's record when its events are appended, so a
// build whose record is large (a long error, many platforms) costs its
// events and not a copy of its record per batch. Retention gives the space
// back: Bolt reuses the pages of deleted builds for new ones (its file does
// not shrink, but stops growing), PostgreSQL's autovacuum does the same for
// its tables.
package history

import (
	"context"
	"errors"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ErrNotFound is returned for a build the store does not have.
var ErrNotFound = errors.New("build not found")

// Filter selects builds for List.
type Filter struct {
	// States keeps builds in one of these states; empty keeps all.
	States []buildv1.BuildState
	// Repo keeps builds of this git repository; empty keeps all.
	Repo string
	// Tenant keeps only builds of this tenant ("" is the tenant of a server
	// without authentication) unless AnyTenant is set. The zero Filter so
	// sees no tenant's builds but the empty tenant's: every listing says
	// whose builds it wants.
	Tenant    string
	AnyTenant bool
	// Match, if set, keeps only the builds it returns true for. It is
	// called on each stored record that the other fields keep, while the
	// store reads them (Bolt: in its transaction): it must be quick, must
	// not call the store and must not change the record.
	Match func(*buildv1.BuildInfo) bool
	// Ascending lists builds oldest first (by id, which sorts by creation
	// time); false lists them newest first.
	Ascending bool
	// Before keeps builds whose id sorts before this one, and After those
	// whose id sorts after it; empty means no bound. The page token of a
	// listing newest first is Before, of one oldest first After.
	Before string
	After  string
	// Limit is the most builds returned; it must be positive.
	Limit int
}

// RequestKey names a request by its caller's idempotency key: the
// request_id of a tenant's request.
type RequestKey struct {
	Tenant    string
	RequestID string
}

// RequestClaim is the build a request key started, and a fingerprint of
// that request (never of its credentials), to tell a retry from a
// different request that reuses the key.
type RequestClaim struct {
	BuildID     string
	Fingerprint string
}

// Store holds build records and event logs.
//
// A build's record and its log are written apart: AppendEvents never
// rewrites the record, and GetBuild and List return the record with
// LastSeq set to the greater of the record's stored LastSeq and the highest
// seq appended to its log. A writer therefore need not put the record after
// each batch of events only to move LastSeq; it puts the record when
// something else in it changes (a state, an error, a result). Events may
// be appended before the record is first put; they count for LastSeq once
// it is. Every method is safe for concurrent use.
type Store interface {
	// ClaimRequest records that key started the build of claim, unless key
	// is claimed already: then it returns the existing claim and false,
	// and records nothing. The claim goes when its build is deleted.
	ClaimRequest(ctx context.Context, key RequestKey, claim RequestClaim) (RequestClaim, bool, error)
	// LookupRequest returns key's claim, or ErrNotFound.
	LookupRequest(ctx context.Context, key RequestKey) (RequestClaim, error)
	// PutBuild creates or replaces a build's record.
	PutBuild(ctx context.Context, b *buildv1.BuildInfo) error
	// AppendEvents adds events to a build's log, in one transaction,
	// without rewriting the build's record. Their seqs follow the last
	// stored one. An event whose seq is stored already replaces it, so a
	// batch written again (a retry after an error) is stored once.
	AppendEvents(ctx context.Context, buildID string, events []*buildv1.BuildEvent) error
	// GetBuild returns a build's record, with LastSeq as the Store's doc
	// says, or ErrNotFound.
	GetBuild(ctx context.Context, id string) (*buildv1.BuildInfo, error)
	// Events returns up to limit events of a build with seq > after, in
	// order, or ErrNotFound if the store has no record of the build.
	Events(ctx context.Context, id string, after uint64, limit int) ([]*buildv1.BuildEvent, error)
	// List returns the builds f keeps, newest first unless f.Ascending, and
	// whether more match after them. Each record's LastSeq is as
	// GetBuild's.
	List(ctx context.Context, f Filter) ([]*buildv1.BuildInfo, bool, error)
	// Delete removes builds, their events and the requests that claimed
	// them. Unknown ids are no error.
	Delete(ctx context.Context, ids ...string) error
	// Close releases the store.
	Close() error
}
