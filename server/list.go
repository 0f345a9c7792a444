package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/buildsvc/buildsvc/buildfilter"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// ListBuilds implements buildv1.BuildServer.
func (s *Server) ListBuilds(ctx context.Context, req *buildv1.ListBuildsRequest) (*buildv1.ListBuildsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, toStatus(fieldErr("page_size", "must not be negative"))
	case size == 0:
		size = 50
	case size > 1000:
		size = 1000
	}
	ascending, err := parseOrderBy(req.GetOrderBy())
	if err != nil {
		return nil, toStatus(err)
	}
	match, err := parseFilter(req.GetFilter())
	if err != nil {
		return nil, toStatus(err)
	}
	c, err := s.callerOf(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	f := history.Filter{Repo: req.GetGitRepo(), Limit: size, Tenant: c.tenant, Ascending: ascending}
	if c.admin {
		f.Tenant, f.AnyTenant = req.GetTenant(), req.GetTenant() == ""
	}
	listing := listingOf(req, f)
	if req.GetPageToken() != "" {
		tok, err := decodePageToken(req.GetPageToken())
		if err != nil {
			return nil, toStatus(err)
		}
		if !tok.legacy && (tok.ascending != ascending || tok.listing != listing) {
			return nil, toStatus(fieldErr("page_token", "is of a listing with another filter, order_by, states, git_repo or tenant: "+
				"a page token goes with the request whose next_page_token it was"))
		}
		if tok.legacy && ascending {
			return nil, toStatus(fieldErr("page_token", "is a build id, the page token of a listing newest first: "+
				"start an oldest-first listing without one"))
		}
		if ascending {
			f.After = tok.last
		} else {
			f.Before = tok.last
		}
	}
	// An active build's stored record may lag its last event: it is
	// filtered and shown as it is now (see current).
	live := s.liveInfos()
	states := req.GetStates()
	f.Match = func(b *buildv1.BuildInfo) bool {
		b = current(b, live)
		return (len(states) == 0 || slices.Contains(states, b.GetState())) && match.Match(b)
	}
	stored, more, err := s.cfg.Store.List(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &buildv1.ListBuildsResponse{Builds: make([]*buildv1.BuildInfo, 0, len(stored))}
	for _, b := range stored {
		b = current(b, live)
		if b.GetName() == "" { // a record stored before builds had names
			b.Name = resourceName(b.GetBuildId())
		}
		resp.Builds = append(resp.Builds, b)
	}
	if more && len(stored) > 0 {
		resp.NextPageToken = pageToken{last: stored[len(stored)-1].GetBuildId(), ascending: ascending, listing: listing}.encode()
	}
	return resp, nil
}

// liveInfos are the records of the active builds as they are now, by id.
// They are taken before the store is read, so that the store's transaction
// waits on no lock of the server's.
func (s *Server) liveInfos() map[string]*buildv1.BuildInfo {
	s.mu.Lock()
	active := slices.Collect(maps.Values(s.active))
	s.mu.Unlock()
	live := make(map[string]*buildv1.BuildInfo, len(active))
	for _, b := range active {
		live[b.id] = b.info()
	}
	return live
}

// current is the newer of a build's stored record and its live one, if it
// is active: the one that has seen more of its log.
func current(stored *buildv1.BuildInfo, live map[string]*buildv1.BuildInfo) *buildv1.BuildInfo {
	if l, ok := live[stored.GetBuildId()]; ok && l.GetLastSeq() >= stored.GetLastSeq() {
		return l
	}
	return stored
}

// parseOrderBy reads ListBuildsRequest.order_by: whether builds are listed
// oldest first.
func parseOrderBy(s string) (ascending bool, err error) {
	words := strings.Fields(s)
	switch {
	case len(words) == 0:
		return false, nil
	case len(words) <= 2 && words[0] == "create_time":
		if len(words) == 1 || strings.EqualFold(words[1], "asc") {
			return true, nil
		}
		if strings.EqualFold(words[1], "desc") {
			return false, nil
		}
	}
	return false, fieldErr("order_by", "%s: want \"create_time desc\" (newest first, the default) or \"create_time\" (oldest first)", quote(s))
}

// parseFilter parses ListBuildsRequest.filter. Its error is a FieldError of
// filter that says where the filter is wrong, and how.
func parseFilter(s string) (*buildfilter.Filter, error) {
	f, err := buildfilter.Parse(s)
	var fe *buildfilter.Error
	switch {
	case err == nil:
		return f, nil
	case errors.As(err, &fe) && fe.Pos > 0:
		return nil, fieldErr("filter", "at %d: %s", fe.Pos, fe.Msg)
	case errors.As(err, &fe):
		return nil, fieldErr("filter", "%s", fe.Msg)
	default:
		return nil, fieldErr("filter", "%v", err)
	}
}

// listingOf is a hash of what selects the builds of a listing: a page
// token is good only for the listing it came from (AIP-158). The page size
// is not in it: it may change from page to page.
func listingOf(req *buildv1.ListBuildsRequest, f history.Filter) [8]byte {
	states := slices.Clone(req.GetStates())
	slices.Sort(states)
	states = slices.Compact(states)
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.AppendUvarint(nil, uint64(len(s))))
		h.Write([]byte(s))
	}
	field(req.GetFilter())
	if f.Ascending {
		field("asc")
	} else {
		field("desc")
	}
	for _, st := range states {
		field(st.String())
	}
	field("")
	field(req.GetGitRepo())
	if f.AnyTenant {
		field("*")
	} else {
		field("=" + f.Tenant)
	}
	var sum [8]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// pageToken is what a next_page_token holds, base64url-encoded: the byte
// 1 (the form), the order (0 newest first, 1 oldest first), the listing's
// hash (8 bytes), then the id of the last build of the page.
//
// Before filter and order_by, a page token was a bare build id (newest
// first). Such a token is still taken for a listing newest first, whatever
// its filter, until the release after the one that brought filter; a build
// id is never base64url (it has a "."), so the two forms cannot be taken
// for each other.
type pageToken struct {
	last      string
	ascending bool
	listing   [8]byte
	// legacy: the token was a bare build id.
	legacy bool
}

const pageTokenForm = 1

func (t pageToken) encode() string {
	b := make([]byte, 0, 10+len(t.last))
	order := byte(0)
	if t.ascending {
		order = 1
	}
	b = append(append(append(b, pageTokenForm, order), t.listing[:]...), t.last...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// isBuildID says whether s has the form of newBuildID's ids.
func isBuildID(s string) bool {
	const layout = "20060102-150405.000000"
	if len(s) <= len(layout) {
		return false
	}
	_, err := time.Parse(layout, s[:len(layout)])
	return err == nil && s[len(layout)] == '-'
}

func decodePageToken(s string) (pageToken, error) {
	if isBuildID(s) {
		return pageToken{last: s, legacy: true}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 11 || b[0] != pageTokenForm || b[1] > 1 {
		return pageToken{}, fieldErr("page_token", "%s is not a page token this server gave: pass a next_page_token as it came", quote(s))
	}
	t := pageToken{ascending: b[1] == 1, last: string(b[10:])}
	copy(t.listing[:], b[2:10])
	return t, nil
}
