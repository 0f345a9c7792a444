package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"
)

// ErrRefNotFound is returned when a repository has no branch, tag or commit
// by the requested name.
var ErrRefNotFound = errors.New("no such branch, tag or commit")

// Resolver turns a git reference (branch, tag, SHA, HEAD) into the commit
// SHA it names now.
type Resolver interface {
	Resolve(ctx context.Context, repo, ref string) (string, error)
}

// RemoteResolver resolves references by listing the remote's refs with
// go-git, as `git ls-remote` does: no clone, no fetch.
type RemoteResolver struct{}

// Resolve implements Resolver.
func (RemoteResolver) Resolve(ctx context.Context, repo, ref string) (string, error) {
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{repo}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{PeelingOption: git.AppendPeeled})
	if err != nil {
		return "", fmt.Errorf("list refs of %s: %w", repo, err)
	}
	return pickRef(refs, ref)
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

// committerTime reads the committer time from a raw git commit object
// ("committer Name <mail> 1700000000 +0100" in its header).
func committerTime(obj []byte) (time.Time, error) {
	header, _, _ := strings.Cut(string(obj), "\n\n")
	for _, line := range strings.Split(header, "\n") {
		rest, ok := strings.CutPrefix(line, "committer ")
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndex(rest, ">")+1:])
		if len(f) != 2 {
			break
		}
		sec, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Time{}, errors.New("commit object has no committer time")
}
