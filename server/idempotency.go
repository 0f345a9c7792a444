package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// admission is what start did with a request: queued a new build, joined
// an identical one, or found the build its request_id already started.
type admission struct {
	id string
	// b is the build while it is active; nil for an ended build that a
	// request_id named.
	b        *build
	joined   bool
	existing bool
}

// errRequestIDReused is a request_id that names a build of a different
// request.
type errRequestIDReused struct{ id, build string }

func (e errRequestIDReused) Error() string {
	return fmt.Sprintf("request_id: %q was used for a different request (build %s)", e.id, e.build)
}

func (e errRequestIDReused) GRPCStatus() *status.Status {
	return status.New(codes.AlreadyExists, e.Error())
}

// errHistoryRead is a request refused because the history could not be
// read.
type errHistoryRead struct{ err error }

func (e errHistoryRead) Error() string {
	return "the build history could not be read: " + e.err.Error()
}
func (e errHistoryRead) Unwrap() error { return e.err }
func (e errHistoryRead) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

// requestFingerprint identifies a request for its request_id: the request
// as sent, without its credentials (a retry may carry fresh ones, and no
// hash of a secret is stored).
func requestFingerprint(req *buildv1.CreateImageRequest) string {
	p := proto.Clone(req).(*buildv1.CreateImageRequest)
	p.GitCredentials, p.RegistryCredentials, p.ModuleCredentials = nil, nil, nil
	for k := range p.SecretEnv {
		p.SecretEnv[k] = ""
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// activeRequestLocked returns the active build that key started; s.mu is
// held.
func (s *Server) activeRequestLocked(key history.RequestKey) *build {
	for _, b := range s.active {
		if b.requestKey == key {
			return b
		}
	}
	return nil
}

// existingRequest returns the build that key's request already started,
// active or stored, or nil. A build of a different request is
// errRequestIDReused.
func (s *Server) existingRequest(ctx context.Context, key history.RequestKey, fingerprint string) (*admission, error) {
	s.mu.Lock()
	b := s.activeRequestLocked(key)
	s.mu.Unlock()
	if b != nil {
		return sameRequest(key, b.id, b.fingerprint, fingerprint, b)
	}
	claim, err := s.cfg.Store.LookupRequest(ctx, key)
	switch {
	case errors.Is(err, history.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, errHistoryRead{err}
	}
	return sameRequest(key, claim.BuildID, claim.Fingerprint, fingerprint, s.activeBuild(claim.BuildID))
}

func sameRequest(key history.RequestKey, id, had, fingerprint string, b *build) (*admission, error) {
	if had != fingerprint {
		return nil, errRequestIDReused{id: key.RequestID, build: id}
	}
	return &admission{id: id, b: b, existing: true}, nil
}

// claimRequest records that b serves key's request, so that a retry after
// the build ended finds it.
func (s *Server) claimRequest(ctx context.Context, key history.RequestKey, fingerprint, id string) {
	if key.RequestID == "" {
		return
	}
	claim, ok, err := s.cfg.Store.ClaimRequest(ctx, key, history.RequestClaim{BuildID: id, Fingerprint: fingerprint})
	switch {
	case err != nil:
		s.cfg.Logger.Error("store request_id", "build", id, "err", err)
	case !ok && claim.BuildID != id:
		s.cfg.Logger.Warn("request_id claimed by another build meanwhile", "build", id, "other", claim.BuildID)
	}
}
