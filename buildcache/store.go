// Package buildcache is a Go build cache that outlives the builder: a
// store of Go's cache entries (an action id naming an output id, the
// output's bytes named by that id), kept by the build server and reached
// from a build's compile step through GOCACHEPROG.
//
// The pieces, from the server outwards:
//
//   - Store is the small interface of the entries; DiskStore keeps them in
//     a directory, content-addressed, verified on read, one namespace per
//     scope, bounded by Clean.
//   - Handler serves one scope of a Store over HTTP/1.1, meant for one
//     build's unix socket (BuildKit forwards the socket into the compile
//     step as an ssh mount); Client is its other end. Stats counts what a
//     Handler served, for the build's report.
//   - Package cacheprog is the GOCACHEPROG helper that runs in the compile
//     step: a local directory first, a Client second.
//
// Go's output id is the SHA-256 of the output's bytes, so a store checks
// every body it takes or gives against its id: a corrupted object is a
// miss, never a wrong build.
package buildcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// IDSize is the size in bytes of Go's action and output ids (SHA-256).
const IDSize = sha256.Size

// ErrNotFound is wrapped by the errors of a lookup that found nothing: an
// unknown action, a missing or corrupted output.
var ErrNotFound = errors.New("build cache entry not found")

// ErrInvalid is wrapped by the errors of a request a store refuses: a
// malformed id or scope, a body that is not what its id says.
var ErrInvalid = errors.New("invalid build cache request")

// CorruptError is the error of an output whose stored bytes no longer hash
// to its id. The store has deleted it; errors.Is(err, ErrNotFound) holds,
// so callers treat it as a miss.
type CorruptError struct {
	// Scope and OutputID name the object.
	Scope    string
	OutputID []byte
	// Digest is the SHA-256 of what was read.
	Digest []byte
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("build cache object %x in scope %q is corrupt (its bytes hash to %x); removed", e.OutputID, e.Scope, e.Digest)
}

// Is makes a CorruptError match ErrNotFound.
func (e *CorruptError) Is(target error) bool { return target == ErrNotFound }

// Entry is what an action id names: an output and when it was stored.
type Entry struct {
	// OutputID is the SHA-256 of the output's bytes.
	OutputID []byte
	// Size is the output's size in bytes.
	Size int64
	// Time is when the entry was put.
	Time time.Time
}

// Store keeps build cache entries, each in a scope: a scope never sees
// another's entries or outputs. Implementations are safe for concurrent
// use.
type Store interface {
	// GetAction returns the entry of actionID, or an error wrapping
	// ErrNotFound.
	GetAction(ctx context.Context, scope string, actionID []byte) (Entry, error)
	// OpenOutput opens the output outputID and returns its size, or an
	// error wrapping ErrNotFound. The bytes read hash to outputID.
	OpenOutput(ctx context.Context, scope string, outputID []byte) (io.ReadCloser, int64, error)
	// Put stores the size bytes of body as outputID and makes actionID
	// name it. A body that is not size bytes hashing to outputID is
	// refused with an error wrapping ErrInvalid, and nothing is stored.
	Put(ctx context.Context, scope string, actionID, outputID []byte, size int64, body io.Reader) error
}

// checkID refuses an id that is not IDSize bytes.
func checkID(what string, id []byte) error {
	if len(id) != IDSize {
		return fmt.Errorf("%w: %s %x is %d bytes, want %d", ErrInvalid, what, id, len(id), IDSize)
	}
	return nil
}

// parseID parses a hex id.
func parseID(what, s string) ([]byte, error) {
	id, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q is not hex", ErrInvalid, what, s)
	}
	return id, checkID(what, id)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
