// Package ocistore keeps a build-cache store (buildcache.Store) in an OCI
// registry, so that every build server of a fleet shares one: the
// registry holds the bytes, the servers hold nothing.
//
// The layout, in the repository given to New:
//
//	<repository>/<scope key>                   one repository per scope
//	  blob sha256:<output id>                  an output: Go's output id is
//	                                           the SHA-256 of its bytes, so
//	                                           it is the blob's digest
//	  tag a-<action id>                        an action: an OCI manifest of
//	                                           artifact type ArtifactType
//	                                           whose one layer is the output
//
// where the scope key is the hex SHA-256 of the scope (truncated to 40
// digits): any string is a scope, and none names another's repository.
// The registry checks every blob against its digest and the client
// checks what it reads, so a corrupted output is a miss, never a wrong
// build. Bounding the store is the registry's: its retention policy or
// garbage collection.
package ocistore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/buildsvc/buildsvc/buildcache"
)

// Media types of the store's manifests and blobs.
const (
	// ArtifactType is the artifact type of an action's manifest.
	ArtifactType = "application/vnd.buildsvc.gocache.action.v1"
	// OutputMediaType is the media type of an output's blob.
	OutputMediaType types.MediaType = "application/vnd.buildsvc.gocache.output.v1"
	// emptyMediaType and emptyJSON are OCI's empty descriptor, the config
	// of an artifact manifest.
	emptyMediaType types.MediaType = "application/vnd.oci.empty.v1+json"
	// ScopeAnnotation names the scope in each manifest, for people.
	ScopeAnnotation = "dev.buildsvc.gocache.scope"
	// createdAnnotation is when the entry was put.
	createdAnnotation = "org.opencontainers.image.created"
)

var emptyJSON = []byte("{}")

// Store is a buildcache.Store in an OCI registry. It is safe for
// concurrent use.
type Store struct {
	repo   string
	puller *remote.Puller // their transports, authenticated once per
	pusher *remote.Pusher // repository, are reused across requests

	mu      sync.Mutex
	configs map[string]bool // scope repositories that have the empty config
}

var _ buildcache.Store = (*Store)(nil)

// New returns a store under repository (e.g. registry.example/buildsvc/
// gocache), reached with opts (credentials, transport). It does not
// contact the registry until the first request.
func New(repository string, opts ...remote.Option) (*Store, error) {
	if repository == "" {
		return nil, errors.New("build-cache repository: empty")
	}
	if _, err := name.NewRepository(repository); err != nil {
		return nil, fmt.Errorf("build-cache repository %q: %w", repository, err)
	}
	if _, err := name.NewRepository(repository + "/" + scopeKey("check")); err != nil {
		return nil, fmt.Errorf("build-cache repository %q: %w", repository, err)
	}
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, fmt.Errorf("build-cache repository: %w", err)
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, fmt.Errorf("build-cache repository: %w", err)
	}
	return &Store{repo: repository, puller: puller, pusher: pusher, configs: map[string]bool{}}, nil
}

// Repository is the repository the store is under.
func (s *Store) Repository() string { return s.repo }

// scopeKey is a scope's repository component.
func scopeKey(scope string) string {
	sum := sha256.Sum256([]byte(scope))
	return hex.EncodeToString(sum[:20])
}

func (s *Store) scopeRepo(scope string) (name.Repository, error) {
	if scope == "" {
		return name.Repository{}, fmt.Errorf("%w: empty scope", buildcache.ErrInvalid)
	}
	return name.NewRepository(s.repo + "/" + scopeKey(scope))
}

func actionTag(repo name.Repository, actionID []byte) name.Tag {
	return repo.Tag("a-" + hex.EncodeToString(actionID))
}

// notFound tells whether err is the registry's 404 (or its "unknown"
// error codes).
func notFound(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	if te.StatusCode == http.StatusNotFound {
		return true
	}
	for _, d := range te.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
			return true
		}
	}
	return false
}

// manifest is an action's manifest.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     types.MediaType   `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        v1.Descriptor     `json:"config"`
	Layers        []v1.Descriptor   `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// GetAction implements buildcache.Store.
func (s *Store) GetAction(ctx context.Context, scope string, actionID []byte) (buildcache.Entry, error) {
	if len(actionID) != buildcache.IDSize {
		return buildcache.Entry{}, fmt.Errorf("%w: action id %x", buildcache.ErrInvalid, actionID)
	}
	repo, err := s.scopeRepo(scope)
	if err != nil {
		return buildcache.Entry{}, err
	}
	desc, err := s.puller.Get(ctx, actionTag(repo, actionID))
	if notFound(err) {
		return buildcache.Entry{}, fmt.Errorf("action %x: %w", actionID, buildcache.ErrNotFound)
	}
	if err != nil {
		return buildcache.Entry{}, fmt.Errorf("build-cache registry: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return buildcache.Entry{}, fmt.Errorf("build-cache registry: action %x: %w", actionID, err)
	}
	if m.ArtifactType != ArtifactType || len(m.Layers) != 1 || m.Layers[0].Digest.Algorithm != "sha256" || m.Layers[0].Size < 0 {
		// Not ours, or not any more: a miss, and a put replaces it.
		return buildcache.Entry{}, fmt.Errorf("action %x is no build-cache entry: %w", actionID, buildcache.ErrNotFound)
	}
	out, err := hex.DecodeString(m.Layers[0].Digest.Hex)
	if err != nil || len(out) != buildcache.IDSize {
		return buildcache.Entry{}, fmt.Errorf("action %x names output %s: %w", actionID, m.Layers[0].Digest, buildcache.ErrNotFound)
	}
	t, _ := time.Parse(time.RFC3339Nano, m.Annotations[createdAnnotation])
	return buildcache.Entry{OutputID: out, Size: m.Layers[0].Size, Time: t}, nil
}

// OpenOutput implements buildcache.Store. What it reads is checked
// against outputID as it is read: a body that does not match fails at its
// end.
func (s *Store) OpenOutput(ctx context.Context, scope string, outputID []byte) (io.ReadCloser, int64, error) {
	if len(outputID) != buildcache.IDSize {
		return nil, 0, fmt.Errorf("%w: output id %x", buildcache.ErrInvalid, outputID)
	}
	repo, err := s.scopeRepo(scope)
	if err != nil {
		return nil, 0, err
	}
	l, err := s.puller.Layer(ctx, repo.Digest("sha256:"+hex.EncodeToString(outputID)))
	if err != nil {
		return nil, 0, fmt.Errorf("build-cache registry: %w", err)
	}
	size, err := l.Size()
	if notFound(err) {
		return nil, 0, fmt.Errorf("output %x: %w", outputID, buildcache.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("build-cache registry: output %x: %w", outputID, err)
	}
	rc, err := l.Compressed() // the bytes as stored, verified against the digest
	if notFound(err) {
		return nil, 0, fmt.Errorf("output %x: %w", outputID, buildcache.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("build-cache registry: output %x: %w", outputID, err)
	}
	return rc, size, nil
}

// Put implements buildcache.Store: the output's blob (unless the
// registry has it), then the action's manifest.
func (s *Store) Put(ctx context.Context, scope string, actionID, outputID []byte, size int64, body io.Reader) error {
	if len(actionID) != buildcache.IDSize || len(outputID) != buildcache.IDSize || size < 0 {
		return fmt.Errorf("%w: action id %x, output id %x, size %d", buildcache.ErrInvalid, actionID, outputID, size)
	}
	repo, err := s.scopeRepo(scope)
	if err != nil {
		return err
	}
	blob, err := spool(body, size, outputID)
	if err != nil {
		return err
	}
	defer blob.remove()
	if err := s.pusher.Upload(ctx, repo, blob); err != nil {
		return fmt.Errorf("build-cache registry: output %x: %w", outputID, err)
	}
	config := static.NewLayer(emptyJSON, emptyMediaType)
	if err := s.ensureConfig(ctx, repo, config); err != nil {
		return err
	}
	cd, err := config.Digest()
	if err != nil {
		return err
	}
	m := manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: emptyMediaType, Digest: cd, Size: int64(len(emptyJSON)), Data: emptyJSON},
		Layers:        []v1.Descriptor{{MediaType: OutputMediaType, Digest: blob.digest, Size: size}},
		Annotations: map[string]string{
			createdAnnotation: time.Now().UTC().Format(time.RFC3339Nano),
			ScopeAnnotation:   scope,
		},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := s.pusher.Put(ctx, actionTag(repo, actionID), rawManifest(raw)); err != nil {
		return fmt.Errorf("build-cache registry: action %x: %w", actionID, err)
	}
	return nil
}

// ensureConfig uploads the empty config blob to repo once per store.
func (s *Store) ensureConfig(ctx context.Context, repo name.Repository, config v1.Layer) error {
	key := repo.String()
	s.mu.Lock()
	done := s.configs[key]
	s.mu.Unlock()
	if done {
		return nil
	}
	if err := s.pusher.Upload(ctx, repo, config); err != nil {
		return fmt.Errorf("build-cache registry: empty config: %w", err)
	}
	s.mu.Lock()
	s.configs[key] = true
	s.mu.Unlock()
	return nil
}

// rawManifest is a manifest to put, with its media type.
type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// fileBlob is an output spooled to a temporary file: a v1.Layer whose
// bytes are pushed as they are.
type fileBlob struct {
	path   string
	size   int64
	digest v1.Hash
}

// spool copies body to a temporary file, checking that it is size bytes
// hashing to outputID; otherwise nothing is kept and the error wraps
// buildcache.ErrInvalid.
func spool(body io.Reader, size int64, outputID []byte) (*fileBlob, error) {
	f, err := os.CreateTemp("", "buildsvc-ocistore-*")
	if err != nil {
		return nil, fmt.Errorf("build-cache registry: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fail := func(err error) (*fileBlob, error) {
		_ = os.Remove(f.Name())
		return nil, err
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("build-cache registry: read output: %w", err))
	case n != size:
		return fail(fmt.Errorf("%w: output %x: body of %d bytes, want %d", buildcache.ErrInvalid, outputID, n, size))
	case !bytes.Equal(h.Sum(nil), outputID):
		return fail(fmt.Errorf("%w: output %x: the body hashes to %x", buildcache.ErrInvalid, outputID, h.Sum(nil)))
	}
	return &fileBlob{path: f.Name(), size: size, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(outputID)}}, nil
}

func (b *fileBlob) remove() { _ = os.Remove(b.path) }

// Digest implements v1.Layer.
func (b *fileBlob) Digest() (v1.Hash, error) { return b.digest, nil }

// DiffID implements v1.Layer: the bytes are not compressed.
func (b *fileBlob) DiffID() (v1.Hash, error) { return b.digest, nil }

// Compressed implements v1.Layer.
func (b *fileBlob) Compressed() (io.ReadCloser, error) { return os.Open(b.path) }

// Uncompressed implements v1.Layer.
func (b *fileBlob) Uncompressed() (io.ReadCloser, error) { return os.Open(b.path) }

// Size implements v1.Layer.
func (b *fileBlob) Size() (int64, error) { return b.size, nil }

// MediaType implements v1.Layer.
func (b *fileBlob) MediaType() (types.MediaType, error) { return OutputMediaType, nil }
