//go:build integration

package integration

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// A module without dependencies, so that its build never asks the module
// proxy: it builds (or fails to compile) in seconds.
func noDepsRepo(t *testing.T, mainGo string) *gitRepo {
	return newRepo(t, map[string]string{"go.mod": "module example.com/nodeps\n\ngo 1.26\n", "main.go": mainGo})
}

// ListBuilds on the real stack: four builds that end SUCCEEDED, FAILED
// (twice, in two repositories) and CANCELLED, with build labels, are
// listed by state, repository, label, error reason and create_time, oldest
// or newest first, a page of one build at a time by next_page_token; a bad
// filter is InvalidArgument naming filter, and a page token is good only
// with the filter it came with.
func TestListBuildsFilters(t *testing.T) {
	p := newHangingProxy(t)
	c := startServer(t, p.configure)
	ctx := t.Context()

	// Refused before anything else, on a server without builds.
	for _, tt := range []struct {
		req    *buildv1.ListBuildsRequest
		prefix string
	}{
		{&buildv1.ListBuildsRequest{Filter: `state = FAILED AND colour = "red"`}, `filter: at 20: unknown field "colour"; fields: state, git_repo`},
		{&buildv1.ListBuildsRequest{Filter: `create_time > 2026-12-01`}, `filter: at 15: create_time wants an RFC 3339 time in double quotes`},
		{&buildv1.ListBuildsRequest{OrderBy: "build_id"}, `order_by: "build_id": want "create_time desc"`},
		{&buildv1.ListBuildsRequest{PageToken: "not-a-token"}, `page_token: "not-a-token" is not a page token`},
	} {
		_, err := c.ListBuilds(ctx, tt.req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.prefix) {
			t.Errorf("ListBuilds(%v) = %v %q, want InvalidArgument %q", tt.req, st.Code(), st.Message(), tt.prefix)
		}
	}

	ok := noDepsRepo(t, "package main\n\nfunc main() {}\n")
	broken := noDepsRepo(t, "package main\n\nfunc main() { undefinedThing() }\n")
	broken2 := noDepsRepo(t, "package main\n\nfunc main() { alsoUndefined() }\n")
	type started struct {
		name string
		repo *gitRepo
		want buildv1.BuildState
		id   string
	}
	builds := []*started{
		{name: "ok", repo: ok, want: buildv1.BuildState_BUILD_STATE_SUCCEEDED},
		{name: "broken", repo: broken, want: buildv1.BuildState_BUILD_STATE_FAILED},
		{name: "broken2", repo: broken2, want: buildv1.BuildState_BUILD_STATE_FAILED},
	}
	labels := map[string]map[string]string{
		"ok": {"team": "payments"}, "broken": {"team": "payments"}, "broken2": {"team": "search"},
		"cancelled": {"team": "payments", "ci": "yes"},
	}
	for _, b := range builds {
		resp, err := c.StartBuild(ctx, startRequest(&buildv1.CreateImageRequest{GitRepo: b.repo.URL, GitCommit: "main",
			ImageTag: tagFor(t, b.name), BuildLabels: labels[b.name]}))
		if err != nil {
			t.Fatalf("start %s: %v", b.name, err)
		}
		b.id = resp.GetBuildId()
	}
	for _, b := range builds {
		if got := lastState(watchAll(t, c, b.id, 0)); got != b.want {
			t.Fatalf("build %s (%s) ended %v, want %v", b.name, b.id, got, b.want)
		}
	}
	// The fourth waits on the module proxy until it is cancelled.
	hang := p.request(hangingRepo(t), tagFor(t, "cancelled"))
	hang.BuildLabels = labels["cancelled"]
	resp, err := c.StartBuild(ctx, startRequest(hang))
	if err != nil {
		t.Fatal(err)
	}
	p.waitReached(t)
	if cr, err := c.CancelBuild(ctx, &buildv1.CancelBuildRequest{BuildId: resp.GetBuildId()}); err != nil || cr.GetBuild().GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("cancel: %v, %v", cr, err)
	}
	builds = append(builds, &started{name: "cancelled", id: resp.GetBuildId(), want: buildv1.BuildState_BUILD_STATE_CANCELLED})

	names := map[string]string{} // build id -> name
	byName := map[string]*buildv1.BuildInfo{}
	for _, b := range builds {
		names[b.id] = b.name
		info, err := c.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: b.id})
		if err != nil {
			t.Fatal(err)
		}
		byName[b.name] = info
	}
	if len(byName["ok"].GetLabels()) == 0 {
		t.Fatalf("build %s has no labels: the request's build_labels are not kept in BuildInfo.labels", byName["ok"].GetBuildId())
	}
	list := func(req *buildv1.ListBuildsRequest) (string, string) {
		t.Helper()
		resp, err := c.ListBuilds(ctx, req)
		if err != nil {
			t.Fatalf("ListBuilds(%v): %v", req, err)
		}
		var got []string
		for _, b := range resp.GetBuilds() {
			got = append(got, names[b.GetBuildId()])
		}
		return strings.Join(got, " "), resp.GetNextPageToken()
	}

	after := byName["broken"].GetCreateTime().AsTime().UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
	for _, tt := range []struct {
		req  *buildv1.ListBuildsRequest
		want string
	}{
		{&buildv1.ListBuildsRequest{}, "cancelled broken2 broken ok"},
		{&buildv1.ListBuildsRequest{OrderBy: "create_time"}, "ok broken broken2 cancelled"},
		{&buildv1.ListBuildsRequest{Filter: "state = FAILED"}, "broken2 broken"},
		{&buildv1.ListBuildsRequest{Filter: "state = CANCELLED OR state = SUCCEEDED"}, "cancelled ok"},
		{&buildv1.ListBuildsRequest{Filter: `state = FAILED AND labels.team = "payments"`}, "broken"},
		{&buildv1.ListBuildsRequest{Filter: `git_repo = "` + broken.URL + `"`}, "broken"},
		{&buildv1.ListBuildsRequest{Filter: `labels.team = payments`, OrderBy: "create_time asc"}, "ok broken cancelled"},
		{&buildv1.ListBuildsRequest{Filter: `labels.ci:*`}, "cancelled"},
		{&buildv1.ListBuildsRequest{Filter: `error.reason = COMPILE_ERROR`}, "broken2 broken"},
		{&buildv1.ListBuildsRequest{Filter: `create_time > "` + after + `"`}, "cancelled broken2"},
		{&buildv1.ListBuildsRequest{Filter: `create_time <= "` + after + `" -state = SUCCEEDED`}, "broken"},
	} {
		if got, _ := list(tt.req); got != tt.want {
			t.Errorf("ListBuilds(%v) = %q, want %q", tt.req, got, tt.want)
		}
	}

	// One build a page, by next_page_token, both ways.
	for _, order := range []string{"", "create_time"} {
		req := &buildv1.ListBuildsRequest{PageSize: 1, Filter: `labels.team = "payments"`, OrderBy: order}
		var pages []string
		for range 5 {
			got, next := list(req)
			pages = append(pages, got)
			if next == "" {
				break
			}
			if strings.Contains(next, byName["ok"].GetBuildId()[:8]) {
				t.Errorf("page token %q is not opaque", next)
			}
			req.PageToken = next
		}
		want := "cancelled|broken|ok"
		if order != "" {
			want = "ok|broken|cancelled"
		}
		if got := strings.Join(pages, "|"); got != want {
			t.Errorf("order_by %q, pages of one: %q, want %q", order, got, want)
		}
	}
	_, next := list(&buildv1.ListBuildsRequest{PageSize: 1, Filter: "state = FAILED"})
	_, err = c.ListBuilds(ctx, &buildv1.ListBuildsRequest{PageSize: 1, Filter: "state = SUCCEEDED", PageToken: next})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "page_token: ") {
		t.Errorf("a token with another filter: %v %q, want InvalidArgument naming page_token", st.Code(), st.Message())
	}
}
