package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/auth"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// countingStore counts List calls.
type countingStore struct {
	history.Store
	lists atomic.Int64
}

func (c *countingStore) List(ctx context.Context, f history.Filter) ([]*buildv1.BuildInfo, bool, error) {
	c.lists.Add(1)
	return c.Store.List(ctx, f)
}

// listID is the id of the i-th listed build: ids sort by creation time.
func listID(i int) string {
	return fmt.Sprintf("20261201-1000%02d.000000-%010d", i, i)
}

// listServer is a server with authentication over a real store of six
// builds, l1 (oldest) to l6, each created i seconds after 10:00 on
// 2026-12-01:
//
//	l1 team-a  SUCCEEDED  repo a  team=payments
//	l2 team-a  FAILED     repo b  team=payments  COMPILE_ERROR
//	l3 team-b  FAILED     repo a  team=search    GIT_NOT_FOUND
//	l4 team-a  CANCELLED  repo a                 (an old record: no name)
//	l5 team-a  FAILED     repo a  team=payments  COMPILE_ERROR
//	l6 team-b  SUCCEEDED  repo b
func listServer(t *testing.T) (*Server, *countingStore) {
	t.Helper()
	db, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	type rec struct {
		tenant, repo, team, reason string
		state                      buildv1.BuildState
	}
	recs := []rec{
		{"team-a", "a", "payments", "", buildv1.BuildState_BUILD_STATE_SUCCEEDED},
		{"team-a", "b", "payments", "COMPILE_ERROR", buildv1.BuildState_BUILD_STATE_FAILED},
		{"team-b", "a", "search", "GIT_NOT_FOUND", buildv1.BuildState_BUILD_STATE_FAILED},
		{"team-a", "a", "", "", buildv1.BuildState_BUILD_STATE_CANCELLED},
		{"team-a", "a", "payments", "COMPILE_ERROR", buildv1.BuildState_BUILD_STATE_FAILED},
		{"team-b", "b", "", "", buildv1.BuildState_BUILD_STATE_SUCCEEDED},
	}
	for i, r := range recs {
		id := listID(i + 1)
		info := &buildv1.BuildInfo{BuildId: id, Name: resourceName(id), Tenant: r.tenant, State: r.state,
			CreateTime: timestamppb.New(time.Date(2026, 12, 1, 10, 0, i+1, 0, time.UTC)),
			Request:    &buildv1.CreateImageRequest{GitRepo: "https://git.example/" + r.repo + ".git", ImageTag: "registry.example/" + r.repo + ":v1"}}
		if r.team != "" {
			info.Labels = map[string]string{"team": r.team}
		}
		if r.reason != "" {
			info.Error = &buildv1.BuildError{Reason: r.reason}
		}
		if i+1 == 4 {
			info.Name = ""
		}
		if err := db.PutBuild(context.Background(), info); err != nil {
			t.Fatal(err)
		}
	}
	store := &countingStore{Store: db}
	return &Server{cfg: Config{Store: store, Authenticated: true, Logger: slog.New(slog.DiscardHandler)},
		active: map[string]*build{}, inflight: map[string]*build{}}, store
}

var (
	listAdmin = auth.Identity{Name: "root", Admin: true}
	listTeamA = auth.Identity{Name: "alice", Tenant: "team-a"}
	listTeamB = auth.Identity{Name: "bob", Tenant: "team-b"}
)

// listed is the short ids (l1 ...) ListBuilds returns, and its error.
func listed(t *testing.T, s *Server, id auth.Identity, req *buildv1.ListBuildsRequest) (string, *buildv1.ListBuildsResponse, error) {
	t.Helper()
	resp, err := s.ListBuilds(auth.NewContext(context.Background(), id), req)
	if err != nil {
		return "", nil, err
	}
	var ids []string
	for _, b := range resp.GetBuilds() {
		for i := 1; i <= 6; i++ {
			if b.GetBuildId() == listID(i) {
				ids = append(ids, fmt.Sprintf("l%d", i))
			}
		}
	}
	return strings.Join(ids, " "), resp, nil
}

func TestListBuildsFilterAndOrder(t *testing.T) {
	s, _ := listServer(t)
	failed := buildv1.BuildState_BUILD_STATE_FAILED
	tests := []struct {
		name string
		id   auth.Identity
		req  *buildv1.ListBuildsRequest
		want string
	}{
		{"admin, all", listAdmin, &buildv1.ListBuildsRequest{}, "l6 l5 l4 l3 l2 l1"},
		{"tenant, all", listTeamA, &buildv1.ListBuildsRequest{}, "l5 l4 l2 l1"},
		{"state", listAdmin, &buildv1.ListBuildsRequest{Filter: "state = FAILED"}, "l5 l3 l2"},
		{"state and label", listAdmin, &buildv1.ListBuildsRequest{Filter: `state = FAILED AND labels.team = "payments"`}, "l5 l2"},
		{"label present", listAdmin, &buildv1.ListBuildsRequest{Filter: `labels.team:*`}, "l5 l3 l2 l1"},
		{"repo", listAdmin, &buildv1.ListBuildsRequest{Filter: `git_repo = "https://git.example/b.git"`}, "l6 l2"},
		{"tag", listAdmin, &buildv1.ListBuildsRequest{Filter: `image_tag : "registry.example/b"`}, "l6 l2"},
		{"reason", listAdmin, &buildv1.ListBuildsRequest{Filter: `error.reason = COMPILE_ERROR`}, "l5 l2"},
		{"create_time", listAdmin, &buildv1.ListBuildsRequest{Filter: `create_time > "2026-12-01T10:00:02Z" create_time <= "2026-12-01T10:00:05Z"`}, "l5 l4 l3"},
		{"or, not", listAdmin, &buildv1.ListBuildsRequest{Filter: `NOT state = FAILED OR tenant = team-b`}, "l6 l4 l3 l1"},
		{"oldest first", listAdmin, &buildv1.ListBuildsRequest{OrderBy: "create_time", Filter: "state = FAILED"}, "l2 l3 l5"},
		{"oldest first, asc", listAdmin, &buildv1.ListBuildsRequest{OrderBy: " create_time  ASC "}, "l1 l2 l3 l4 l5 l6"},
		{"newest first, desc", listAdmin, &buildv1.ListBuildsRequest{OrderBy: "create_time desc"}, "l6 l5 l4 l3 l2 l1"},
		{"states and filter: both", listAdmin, &buildv1.ListBuildsRequest{States: []buildv1.BuildState{failed}, Filter: "tenant = team-a"}, "l5 l2"},
		{"git_repo and filter: both", listAdmin, &buildv1.ListBuildsRequest{GitRepo: "https://git.example/a.git", Filter: "state != FAILED"}, "l4 l1"},
		{"admin, tenant in the filter", listAdmin, &buildv1.ListBuildsRequest{Filter: "tenant = team-b"}, "l6 l3"},
		{"admin, tenant field and filter", listAdmin, &buildv1.ListBuildsRequest{Tenant: "team-a", Filter: "tenant = team-b"}, ""},
		// A tenant's filter on tenant only narrows to its own builds.
		{"tenant, its own tenant", listTeamA, &buildv1.ListBuildsRequest{Filter: "tenant = team-a"}, "l5 l4 l2 l1"},
		{"tenant, another tenant", listTeamA, &buildv1.ListBuildsRequest{Filter: "tenant = team-b"}, ""},
		{"tenant, any tenant", listTeamA, &buildv1.ListBuildsRequest{Filter: "tenant != team-a OR tenant = team-b"}, ""},
		{"tenant, another tenant's field", listTeamA, &buildv1.ListBuildsRequest{Tenant: "team-b", Filter: "state = FAILED"}, "l5 l2"},
	}
	for _, tt := range tests {
		got, _, err := listed(t, s, tt.id, tt.req)
		if err != nil || got != tt.want {
			t.Errorf("%s: ListBuilds = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// Refused arguments are InvalidArgument naming the field, before the
// store is read.
func TestListBuildsRefuses(t *testing.T) {
	s, store := listServer(t)
	_, first, err := listed(t, s, listAdmin, &buildv1.ListBuildsRequest{PageSize: 1, Filter: "state = FAILED"})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", first, err)
	}
	token := first.GetNextPageToken()
	_, asc, err := listed(t, s, listAdmin, &buildv1.ListBuildsRequest{PageSize: 1, OrderBy: "create_time"})
	if err != nil || asc.GetNextPageToken() == "" {
		t.Fatalf("first page oldest first: %v, %v", asc, err)
	}
	_, teamA, err := listed(t, s, listTeamA, &buildv1.ListBuildsRequest{PageSize: 1})
	if err != nil || teamA.GetNextPageToken() == "" {
		t.Fatalf("first page of team-a: %v, %v", teamA, err)
	}
	tests := []struct {
		name   string
		id     auth.Identity
		req    *buildv1.ListBuildsRequest
		prefix string // of the message
	}{
		{"unknown field", listAdmin, &buildv1.ListBuildsRequest{Filter: `state = FAILED AND colour = "red"`},
			`filter: at 20: unknown field "colour"; fields: state, git_repo, image_tag, commit, labels.KEY, tenant, create_time, error.reason`},
		{"bad state", listAdmin, &buildv1.ListBuildsRequest{Filter: `state = DONE`}, `filter: at 9: unknown state "DONE"`},
		{"unclosed", listAdmin, &buildv1.ListBuildsRequest{Filter: `(state = FAILED`}, `filter: at 16: want ) to close`},
		{"too long", listAdmin, &buildv1.ListBuildsRequest{Filter: strings.Repeat(" ", 5000)}, `filter: 5000 bytes long; at most 4096`},
		{"order_by field", listAdmin, &buildv1.ListBuildsRequest{OrderBy: "name"}, `order_by: "name": want "create_time desc"`},
		{"order_by direction", listAdmin, &buildv1.ListBuildsRequest{OrderBy: "create_time up"}, `order_by: "create_time up"`},
		{"order_by two fields", listAdmin, &buildv1.ListBuildsRequest{OrderBy: "create_time desc, build_id"}, `order_by:`},
		{"not a token", listAdmin, &buildv1.ListBuildsRequest{PageToken: "nope"}, `page_token: "nope" is not a page token this server gave`},
		{"a token of another form", listAdmin, &buildv1.ListBuildsRequest{PageToken: base64.RawURLEncoding.EncodeToString([]byte("\x02\x00abcdefghl1"))}, `page_token:`},
		{"token, another filter", listAdmin, &buildv1.ListBuildsRequest{PageToken: token, Filter: "state = SUCCEEDED"}, `page_token: is of a listing with another filter`},
		{"token, no filter", listAdmin, &buildv1.ListBuildsRequest{PageToken: token}, `page_token: is of a listing`},
		{"token, another order", listAdmin, &buildv1.ListBuildsRequest{PageToken: token, Filter: "state = FAILED", OrderBy: "create_time"}, `page_token: is of a listing`},
		{"token of an admin, a tenant", listTeamA, &buildv1.ListBuildsRequest{PageToken: token, Filter: "state = FAILED"}, `page_token: is of a listing`},
		{"token of another tenant", listTeamB, &buildv1.ListBuildsRequest{PageToken: teamA.GetNextPageToken()}, `page_token: is of a listing`},
		{"token of a tenant, an admin", listAdmin, &buildv1.ListBuildsRequest{PageToken: teamA.GetNextPageToken()}, `page_token: is of a listing`},
		{"token, states", listAdmin, &buildv1.ListBuildsRequest{PageToken: token, Filter: "state = FAILED", States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED}}, `page_token: is of a listing`},
		{"token, git_repo", listAdmin, &buildv1.ListBuildsRequest{PageToken: token, Filter: "state = FAILED", GitRepo: "x"}, `page_token: is of a listing`},
		{"ascending token, descending", listAdmin, &buildv1.ListBuildsRequest{PageToken: asc.GetNextPageToken()}, `page_token: is of a listing`},
		{"build id, oldest first", listAdmin, &buildv1.ListBuildsRequest{PageToken: listID(3), OrderBy: "create_time"}, `page_token: is a build id`},
		{"negative size", listAdmin, &buildv1.ListBuildsRequest{PageSize: -1}, `page_size: must not be negative`},
	}
	for _, tt := range tests {
		before := store.lists.Load()
		_, _, err := listed(t, s, tt.id, tt.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.prefix) {
			t.Errorf("%s: %v %q, want InvalidArgument %q", tt.name, st.Code(), st.Message(), tt.prefix)
		}
		if store.lists.Load() != before {
			t.Errorf("%s: the store was read before the refusal", tt.name)
		}
	}
}

// Pages of one build follow next_page_token to the end, both ways, with a
// filter; the page size may change from page to page.
func TestListBuildsPages(t *testing.T) {
	s, _ := listServer(t)
	tests := []struct {
		req  *buildv1.ListBuildsRequest
		want string
	}{
		{&buildv1.ListBuildsRequest{}, "l6 l5 l4 l3 l2 l1"},
		{&buildv1.ListBuildsRequest{OrderBy: "create_time"}, "l1 l2 l3 l4 l5 l6"},
		{&buildv1.ListBuildsRequest{Filter: "state = FAILED"}, "l5 l3 l2"},
		{&buildv1.ListBuildsRequest{Filter: "state = FAILED", OrderBy: "create_time asc"}, "l2 l3 l5"},
		{&buildv1.ListBuildsRequest{Filter: `labels.team = payments`, States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED}}, "l5 l2"},
	}
	for _, tt := range tests {
		req := tt.req
		var all []string
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatalf("%v: paging does not end", tt.req)
			}
			req.PageSize = int32(1 + page%2)
			got, resp, err := listed(t, s, listAdmin, req)
			if err != nil {
				t.Fatalf("%v, page %d: %v", req, page, err)
			}
			all = append(all, got)
			if resp.GetNextPageToken() == "" {
				break
			}
			if strings.Contains(resp.GetNextPageToken(), "20261201") {
				t.Errorf("token %q shows a build id", resp.GetNextPageToken())
			}
			req.PageToken = resp.GetNextPageToken()
		}
		if got := strings.Join(strings.Fields(strings.Join(all, " ")), " "); got != tt.want {
			t.Errorf("%v: pages list %q, want %q", tt.req, got, tt.want)
		}
	}
}

// A page token that is a bare build id, the form before filter and
// order_by, still starts a page newest first after that build.
func TestListBuildsLegacyToken(t *testing.T) {
	s, _ := listServer(t)
	got, resp, err := listed(t, s, listAdmin, &buildv1.ListBuildsRequest{PageToken: listID(4), PageSize: 2})
	if err != nil || got != "l3 l2" || resp.GetNextPageToken() == "" {
		t.Fatalf("ListBuilds(page_token %s) = %q, %v, %v; want l3 l2 and a next page", listID(4), got, resp, err)
	}
	got, _, err = listed(t, s, listAdmin, &buildv1.ListBuildsRequest{PageToken: resp.GetNextPageToken(), PageSize: 2})
	if err != nil || got != "l1" {
		t.Errorf("the page after: %q, %v; want l1", got, err)
	}
}

// Every listed build has its name, old records too.
func TestListBuildsNames(t *testing.T) {
	s, _ := listServer(t)
	_, resp, err := listed(t, s, listAdmin, &buildv1.ListBuildsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range resp.GetBuilds() {
		if b.GetName() != "builds/"+b.GetBuildId() {
			t.Errorf("build %s is named %q", b.GetBuildId(), b.GetName())
		}
	}
}

// An active build is filtered and shown as it is now, not as stored,
// unless its stored record has seen more of its log.
func TestListBuildsShowsLiveBuilds(t *testing.T) {
	s, store := listServer(t)
	live := func(i int, tenant string, state buildv1.BuildState) {
		id := listID(i)
		b := &build{id: id, tenant: tenant, state: state, stop: make(chan struct{}),
			creds: &credentials.Build{}, req: &request{Repo: "https://git.example/a.git"}}
		b.log = newEventLog(id, newRedactor(nil), 0)
		s.active[id] = b
	}
	// l4 is stored CANCELLED (at seq 0); it is BUILDING now.
	live(4, "team-a", buildv1.BuildState_BUILD_STATE_BUILDING)
	// l6 is stored SUCCEEDED at seq 3, newer than its live record's log.
	newer, err := store.GetBuild(context.Background(), listID(6))
	if err != nil {
		t.Fatal(err)
	}
	newer.LastSeq = 3
	if err := store.PutBuild(context.Background(), newer); err != nil {
		t.Fatal(err)
	}
	live(6, "team-b", buildv1.BuildState_BUILD_STATE_PUSHING)
	building := []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_BUILDING}
	tests := []struct {
		name string
		req  *buildv1.ListBuildsRequest
		want string
	}{
		{"no filter", &buildv1.ListBuildsRequest{}, "l6 l5 l4 l3 l2 l1"},
		{"live state, filter", &buildv1.ListBuildsRequest{Filter: "state = BUILDING"}, "l4"},
		{"live state, states", &buildv1.ListBuildsRequest{States: building}, "l4"},
		{"live state, paged", &buildv1.ListBuildsRequest{States: building, PageSize: 1}, "l4"},
		{"stored state, filter", &buildv1.ListBuildsRequest{Filter: "state = CANCELLED"}, ""},
		{"stored state, states", &buildv1.ListBuildsRequest{States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_CANCELLED}}, ""},
		{"newer stored state", &buildv1.ListBuildsRequest{Filter: "state = SUCCEEDED"}, "l6 l1"},
		{"older live state", &buildv1.ListBuildsRequest{Filter: "state = PUSHING"}, ""},
	}
	for _, tt := range tests {
		got, resp, err := listed(t, s, listAdmin, tt.req)
		if err != nil || got != tt.want {
			t.Errorf("%s: ListBuilds = %q, %v; want %q", tt.name, got, err, tt.want)
			continue
		}
		for _, info := range resp.GetBuilds() {
			want := map[string]buildv1.BuildState{listID(4): buildv1.BuildState_BUILD_STATE_BUILDING, listID(6): buildv1.BuildState_BUILD_STATE_SUCCEEDED}[info.GetBuildId()]
			if want != 0 && info.GetState() != want {
				t.Errorf("%s: build %s is shown %v, want %v", tt.name, info.GetBuildId(), info.GetState(), want)
			}
		}
	}
}
