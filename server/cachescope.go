package server

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Cache scopes: which builds share the Go module and build caches, on
// buildkitd (the cache mounts' ids) and in the service's stores that
// outlive a buildkitd (the module proxy's and the build-cache store's
// namespaces, named after the mounts' ids). A build reads and writes only
// its scope's entries, so no build outside a scope can poison it.
const (
	// CacheScopeService is the default: the module cache is shared by the
	// whole service (every module in it was checked against go.sum and the
	// checksum database), except for builds that may fetch private
	// modules, which get their tenant's own; the build cache is per tenant.
	CacheScopeService = "service"
	// CacheScopeRepositoryOwner narrows both caches further, to the
	// repository's host and owner (its URL's first path element, e.g.
	// github.com/acme): builds of one owner's repositories share them.
	CacheScopeRepositoryOwner = "repository-owner"
)

// validCacheScope says s is a CacheScope setting.
func validCacheScope(s string) bool {
	return s == "" || s == CacheScopeService || s == CacheScopeRepositoryOwner
}

// repositoryOwner is the host (with its port) and first path element of a
// repository URL: github.com/acme for https://github.com/acme/app.git.
func repositoryOwner(repo string) (string, error) {
	r, err := parseGitRemote(repo)
	if err != nil {
		return "", err
	}
	owner, _, _ := strings.Cut(strings.Trim(r.Path, "/"), "/")
	return strings.ToLower(r.host()) + "/" + owner, nil
}

// ownerSuffix is the suffix of a scope narrowed to a repository's owner:
// a hash, so that any host and owner make a valid cache id. A URL that
// does not parse (validation refuses those first) is its own owner.
func ownerSuffix(repo string) string {
	owner, err := repositoryOwner(repo)
	if err != nil {
		owner = repo
	}
	sum := sha256.Sum256([]byte(owner))
	return "-owner-" + hex.EncodeToString(sum[:8])
}

// maxStoreScope is the longest namespace the stores take.
const maxStoreScope = 63

// storeScope is the namespace in the service's stores of the cache mount
// id: the id itself, lower-cased, or, if longer than the stores take, its
// start and a hash of it.
func storeScope(id string) string {
	id = strings.ToLower(id)
	if len(id) <= maxStoreScope {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:8])
	return strings.TrimRight(id[:maxStoreScope-len(h)-1], "-._") + "-" + h
}
