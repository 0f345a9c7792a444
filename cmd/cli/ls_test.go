package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/buildfilter"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// lsNow is the clock of the ls tests: five minutes after listedBuilds'
// newest build.
var lsNow = time.Date(2025, 11, 25, 10, 10, 0, 0, time.UTC)

func setListClock(t *testing.T, now time.Time) {
	t.Helper()
	old := listClock
	listClock = func() time.Time { return now }
	t.Cleanup(func() { listClock = old })
}

func TestParseFilters(t *testing.T) {
	failed, cancelled, building := buildv1.BuildState_BUILD_STATE_FAILED, buildv1.BuildState_BUILD_STATE_CANCELLED, buildv1.BuildState_BUILD_STATE_BUILDING
	now := lsNow
	tests := []struct {
		in      []string
		want    listFilter
		wantErr string
	}{
		{in: nil, want: listFilter{}},
		{in: []string{"state=failed"}, want: listFilter{states: []buildv1.BuildState{failed}}},
		{in: []string{"state=failed", "state=Cancelled"}, want: listFilter{states: []buildv1.BuildState{failed, cancelled}}},
		{in: []string{"state=failed,cancelled,repo=https://git.example/app.git"}, want: listFilter{states: []buildv1.BuildState{failed, cancelled}, repo: "https://git.example/app.git"}},
		{in: []string{"state=failed,repo=https://git.example/app.git", "state=building,failed"}, want: listFilter{states: []buildv1.BuildState{failed, building}, repo: "https://git.example/app.git"}},
		{in: []string{"STATE = BUILD_STATE_FAILED"}, want: listFilter{states: []buildv1.BuildState{failed}}},
		{in: []string{"repo=a", "repo=a"}, want: listFilter{repo: "a"}},
		{in: []string{"repo=ssh://git@host/x?y=z"}, want: listFilter{repo: "ssh://git@host/x?y=z"}},
		{in: []string{"tag=r.example/a:v1,r.example/a:v2", "tag=r.example/a:v1"}, want: listFilter{tags: []string{"r.example/a:v1", "r.example/a:v2"}}},
		{in: []string{"label=team=payments", "label=ci"}, want: listFilter{labels: []string{"team=payments", "ci"}}},
		{in: []string{"label=team=a=b"}, want: listFilter{labels: []string{"team=a=b"}}},
		{in: []string{"reason=COMPILE_ERROR,GIT_NOT_FOUND"}, want: listFilter{reasons: []string{"COMPILE_ERROR", "GIT_NOT_FOUND"}}},
		{in: []string{"state=failed,tag=x"}, want: listFilter{states: []buildv1.BuildState{failed}, tags: []string{"x"}}},
		{in: []string{"since=90m"}, want: listFilter{since: now.Add(-90 * time.Minute)}},
		{in: []string{"since=7d", "before=1h"}, want: listFilter{since: now.AddDate(0, 0, -7), before: now.Add(-time.Hour)}},
		{in: []string{"since=2026-01-02T03:04:05+01:00"}, want: listFilter{since: time.Date(2026, 1, 2, 2, 4, 5, 0, time.UTC)}},
		{in: []string{"before=2026-01-02"}, want: listFilter{before: time.Date(2026, 1, 2, 0, 0, 0, 0, time.Local)}},
		{in: []string{"color=red"}, wantErr: `--filter "color=red": unknown filter "color": want state, repo, tag, label, reason, since, before`},
		{in: []string{"state=failed,status=x"}, wantErr: `--filter "state=failed,status=x": unknown filter "status"`},
		{in: []string{"state=done"}, wantErr: `--filter "state=done": unknown state "done": want one of queued,`},
		{in: []string{"state="}, wantErr: `--filter "state=": unknown state ""`},
		{in: []string{"failed"}, wantErr: `--filter "failed": want KEY=VALUE, e.g. state=failed`},
		{in: []string{"repo="}, wantErr: `--filter "repo=": repo is empty`},
		{in: []string{"tag="}, wantErr: `--filter "tag=": tag is empty`},
		{in: []string{"repo=a", "repo=b"}, wantErr: `--filter "repo=b": one repo at a time`},
		{in: []string{"label=Team=x"}, wantErr: `--filter "label=Team=x": label key "Team": want 1-63 characters`},
		{in: []string{"label==x"}, wantErr: `--filter "label==x": label key "": want`},
		{in: []string{"since=yesterday"}, wantErr: `--filter "since=yesterday": since=yesterday: want a duration ago (10m, 2h, 7d), an RFC 3339 time`},
		{in: []string{"before=-5m"}, wantErr: `--filter "before=-5m": before=-5m: a negative duration`},
		{in: []string{"since=1h", "since=2h"}, wantErr: `--filter "since=2h": since is given twice`},
	}
	for _, tt := range tests {
		got, err := parseFilters(tt.in, now)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFilters(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		tt.want.now = now
		for _, f := range []*listFilter{&got, &tt.want} { // the same instants, whatever the zone
			f.since, f.before = f.since.UTC(), f.before.UTC()
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseFilters(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// TestListFilterString: the filters that are not request fields of their
// own become one AIP-160 filter, after --where, that the server's parser
// takes.
func TestListFilterString(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		f     listFilter
		where string
		want  string
	}{
		{f: listFilter{}, want: ""},
		{f: listFilter{}, where: "  state = FAILED OR state = CANCELLED ", want: "state = FAILED OR state = CANCELLED"},
		{f: listFilter{tags: []string{"r.example/a:v1"}}, want: `image_tag = "r.example/a:v1"`},
		{f: listFilter{tags: []string{"r.example/a:v1", "r.example/a:v2"}}, want: `(image_tag = "r.example/a:v1" OR image_tag = "r.example/a:v2")`},
		{f: listFilter{labels: []string{"team=pay \"ments\"", "ci"}}, want: `labels.team = "pay \"ments\"" AND labels.ci:*`},
		{f: listFilter{reasons: []string{"COMPILE_ERROR", "GIT_NOT_FOUND"}}, want: `(error.reason = "COMPILE_ERROR" OR error.reason = "GIT_NOT_FOUND")`},
		{f: listFilter{since: at, before: at.Add(90 * time.Minute).In(time.FixedZone("x", 3600))}, want: `create_time >= "2026-12-01T10:00:00Z" AND create_time < "2026-12-01T11:30:00Z"`},
		{
			f:     listFilter{tags: []string{"t"}, labels: []string{"team=a"}, reasons: []string{"R"}, since: at},
			where: `state = FAILED OR tenant = x`,
			want:  `state = FAILED OR tenant = x AND image_tag = "t" AND labels.team = "a" AND error.reason = "R" AND create_time >= "2026-12-01T10:00:00Z"`,
		},
	}
	for _, tt := range tests {
		got := tt.f.filter(tt.where)
		if got != tt.want {
			t.Errorf("%+v.filter(%q) =\n%s\nwant\n%s", tt.f, tt.where, got, tt.want)
		}
		if _, err := buildfilter.Parse(got); err != nil {
			t.Errorf("the server does not take %q: %v", got, err)
		}
	}
}

// TestLsFilter checks the request --filter, --state and --repo make, and
// that a bad filter is bad usage that names it, before any call.
func TestLsFilter(t *testing.T) {
	tests := []struct {
		args       []string
		want       *buildv1.ListBuildsRequest
		wantStderr string
	}{
		{
			args: []string{"--filter", "state=failed,cancelled", "--filter", "repo=https://git.example/app.git"},
			want: &buildv1.ListBuildsRequest{States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED, buildv1.BuildState_BUILD_STATE_CANCELLED}, GitRepo: "https://git.example/app.git"},
		},
		{
			args: []string{"-f", "state=failed,cancelled,repo=https://git.example/app.git"},
			want: &buildv1.ListBuildsRequest{States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED, buildv1.BuildState_BUILD_STATE_CANCELLED}, GitRepo: "https://git.example/app.git"},
		},
		{
			args: []string{"--filter", "state=failed", "--state", "queued", "--repo", "r"},
			want: &buildv1.ListBuildsRequest{States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED, buildv1.BuildState_BUILD_STATE_QUEUED}, GitRepo: "r"},
		},
		{
			args: []string{"--filter", "label=team=payments,tag=r.example/a:v1", "--filter", "since=1h", "--filter", "reason=COMPILE_ERROR", "--order", "oldest"},
			want: &buildv1.ListBuildsRequest{OrderBy: "create_time",
				Filter: `image_tag = "r.example/a:v1" AND labels.team = "payments" AND error.reason = "COMPILE_ERROR" AND create_time >= "2025-11-25T09:10:00Z"`},
		},
		{
			args: []string{"--where", `state = FAILED AND labels.team = "x"`, "--filter", "label=ci", "--state", "failed", "--order", "Newest"},
			want: &buildv1.ListBuildsRequest{States: []buildv1.BuildState{buildv1.BuildState_BUILD_STATE_FAILED}, Filter: `state = FAILED AND labels.team = "x" AND labels.ci:*`},
		},
		{args: []string{"--where", "colour = red"}, want: &buildv1.ListBuildsRequest{Filter: "colour = red"}}, // the server says what is wrong
		{args: []string{"--filter", "before=2025-11-25T10:00:00+01:00"}, want: &buildv1.ListBuildsRequest{Filter: `create_time < "2025-11-25T09:00:00Z"`}},
		{args: []string{"--order", "sideways"}, wantStderr: `error: --order "sideways": want newest or oldest`},
		{args: []string{"--filter", "since=soon"}, wantStderr: `error: --filter "since=soon": since=soon: want a duration ago`},
		{args: []string{"--filter", "label=Team"}, wantStderr: `error: --filter "label=Team": label key "Team"`},
		{args: []string{"--filter", "status=failed"}, wantStderr: `error: --filter "status=failed": unknown filter "status": want state, repo, tag, label, reason, since, before`},
		{args: []string{"--filter", "state=finished"}, wantStderr: `error: --filter "state=finished": unknown state "finished"`},
		{args: []string{"--filter", "repo=a", "--repo", "b"}, wantStderr: `error: --repo: one repo at a time`},
		{args: []string{"--state", "nope"}, wantStderr: `error: --state: unknown state "nope"`},
	}
	setListClock(t, lsNow)
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := &fakeServer{builds: listedBuilds()}
			r := runCLI(t, append([]string{"builds", "ls", "--server", f.start(t)}, tt.args...)...)
			if tt.want == nil {
				if r.code != exitUsage || !strings.Contains(r.stderr, tt.wantStderr) || len(f.calls()) != 0 {
					t.Errorf("exit code %d, stderr %q, calls %v; want 2, %q and no call", r.code, r.stderr, f.calls(), tt.wantStderr)
				}
				return
			}
			if calls := f.calls(); r.code != exitOK || len(calls) != 1 || !proto.Equal(calls[0], tt.want) {
				t.Errorf("exit code %d, calls %v; want 0 and %v\nstderr:\n%s", r.code, calls, tt.want, r.stderr)
			}
		})
	}
}

// TestLsAllPagesKeepTheFilter: --all asks for every page with the same
// filter and order, each with the token the page before gave.
func TestLsAllPagesKeepTheFilter(t *testing.T) {
	f := &fakeServer{builds: listedBuilds()}
	r := runCLI(t, "builds", "ls", "--server", f.start(t), "-q", "--all", "--limit", "2", "--filter", "label=team=a", "--order", "oldest")
	if r.code != exitOK || r.stdout != "b-5\nb-4\nb-3\nb-2\nb-1\n" {
		t.Fatalf("exit code %d, stdout %q; want every build\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var tokens []string
	for _, c := range f.calls() {
		req := c.(*buildv1.ListBuildsRequest)
		if req.GetFilter() != `labels.team = "a"` || req.GetOrderBy() != "create_time" || req.GetPageSize() != 2 {
			t.Errorf("call %v: want the filter, order and size of the first", req)
		}
		tokens = append(tokens, req.GetPageToken())
	}
	if want := []string{"", "2", "4"}; !reflect.DeepEqual(tokens, want) {
		t.Errorf("page tokens %q, want %q", tokens, want)
	}
}

func TestLsFormat(t *testing.T) {
	setListClock(t, lsNow)
	tests := []struct {
		name       string
		args       []string
		wantStdout string
	}{
		{
			name:       "fields",
			args:       []string{"--format", "{{.ID}} {{.State}} {{.Created}} {{.Duration}}", "--limit", "3"},
			wantStdout: "b-5 queued 5 minutes ago \nb-4 cancelled 6 minutes ago \nb-3 failed 7 minutes ago 4s\n",
		},
		{
			name:       "table",
			args:       []string{"--format", `table {{.ID}}\t{{.Status}}\t{{.CreatedAt}}`, "--limit", "2"},
			wantStdout: "BUILD  STATUS            CREATED AT\nb-5    queued (2 ahead)  2025-11-25T10:05:00Z\nb-4    cancelled         2025-11-25T10:04:00Z\n",
		},
		{
			name:       "functions",
			args:       []string{"--format", `{{upper .State}} {{json .ID}} {{truncate .Error 8}} {{or .Commit "-"}}`, "--limit", "1", "--page-token", "2"},
			wantStdout: "FAILED \"b-3\" go buil… 1a2b3c4d5e6f\n",
		},
		{
			name:       "no-trunc",
			args:       []string{"--format", "{{.Commit}} {{.Created}} {{.Error}}", "--no-trunc", "--limit", "1", "--page-token", "2"},
			wantStdout: "1a2b3c4d5e6f7a8b9c0d 2025-11-25T10:03:00Z go build: exit code 1\n",
		},
		{
			name:       "table alone is the default",
			args:       []string{"--format", "table", "--limit", "1"},
			wantStdout: "BUILD  STATUS            REPO                         COMMIT  TAG               CREATED        DURATION  ERROR\nb-5    queued (2 ahead)  https://git.example/app.git  -       r.example/app:v1  5 minutes ago  -         -\n",
		},
		{
			name:       "labels",
			args:       []string{"--format", `table {{.ID}}\t{{.Labels}}`, "--limit", "2"},
			wantStdout: "BUILD  LABELS\nb-5    ci=,team=payments\nb-4    \n",
		},
		{
			name:       "nothing listed",
			args:       []string{"--format", "table {{.ID}}", "--page-token", "5"},
			wantStdout: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{builds: listedBuilds()}
			f.builds[2].Error = &buildv1.BuildError{Code: int32(codes.Unknown), Message: "go build: exit code 1"}
			f.builds[0].Labels = map[string]string{"team": "payments", "ci": ""}
			r := runCLI(t, append([]string{"builds", "ls", "--server", f.start(t)}, tt.args...)...)
			if r.code != exitOK || r.stdout != tt.wantStdout {
				t.Errorf("exit code %d, stdout:\n%s\nwant 0 and:\n%s\nstderr:\n%s", r.code, r.stdout, tt.wantStdout, r.stderr)
			}
		})
	}
}

// TestLsBadFormat: a template that does not parse, or names a field a row
// does not have, is bad usage before any call.
func TestLsBadFormat(t *testing.T) {
	for _, format := range []string{"{{.ID", "{{.Nope}}", "table {{.ID}}\t{{.id}}", "{{nope .ID}}", "{{truncate .ID}}"} {
		t.Run(format, func(t *testing.T) {
			f := &fakeServer{builds: listedBuilds()}
			r := runCLI(t, "builds", "ls", "--server", f.start(t), "--format", format)
			if r.code != exitUsage || !strings.Contains(r.stderr, fmt.Sprintf("error: --format %q: ", format)) || len(f.calls()) != 0 {
				t.Errorf("exit code %d, stderr %q, calls %v; want 2, the format named and no call", r.code, r.stderr, f.calls())
			}
		})
	}
}

func TestLsQuiet(t *testing.T) {
	builds := historyBuilds()
	f := &fakeServer{builds: builds}
	r := runCLI(t, "builds", "ls", "--server", f.start(t), "-q", "--limit", "3")
	want := builds[0].GetBuildId() + "\n" + builds[1].GetBuildId() + "\n" + builds[2].GetBuildId() + "\n"
	if r.code != exitOK || r.stdout != want {
		t.Errorf("exit code %d, stdout %q; want 0 and the whole ids %q", r.code, r.stdout, want)
	}
	if r.stderr != "more builds: --page-token 3\n" {
		t.Errorf("stderr %q, want the next page's token", r.stderr)
	}
	r = runCLI(t, "builds", "ls", "--server", f.start(t), "-q", "--page-token", "9")
	if r.code != exitOK || r.stdout != "" || r.stderr != "" {
		t.Errorf("nothing listed: exit code %d, stdout %q, stderr %q; want 0 and nothing", r.code, r.stdout, r.stderr)
	}
}

// TestLsShortIDs: ids are shortened to a prefix that findBuild resolves,
// unless --no-trunc.
func TestLsShortIDs(t *testing.T) {
	setListClock(t, lsNow)
	builds := historyBuilds()
	f := historyFake{&fakeServer{builds: builds}}
	addr := f.start(t)
	r := runCLI(t, "builds", "ls", "--server", addr, "--format", "{{.ID}}")
	want := []string{
		"20251125-100603", "20251125-100503", "20251125-100403", "20251125-100303", "20251125-100203", "20251125-100103", "20251125-100003",
		"20251125-095930.000002", "20251125-095930.000001",
	}
	if got := strings.Fields(r.stdout); r.code != exitOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("exit code %d, ids %q; want %q", r.code, got, want)
	}
	for i, short := range want {
		r := runCLI(t, "get", "--server", addr, "-o", "json", short)
		if r.code != exitOK || !strings.Contains(r.stdout, `"buildId": "`+builds[i].GetBuildId()+`"`) {
			t.Errorf("get %s: exit code %d, stdout %q; want %s", short, r.code, r.stdout, builds[i].GetBuildId())
		}
	}
	r = runCLI(t, "builds", "ls", "--server", addr, "--format", "{{.ID}}", "--no-trunc", "--limit", "1")
	if r.stdout != builds[0].GetBuildId()+"\n" {
		t.Errorf("--no-trunc: stdout %q, want the whole id", r.stdout)
	}
}

func TestShortIDs(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{in: nil, want: []string{}},
		{in: []string{"b-1", "b-2"}, want: []string{"b-1", "b-2"}},
		{in: []string{"20251125-100503.000001-aa", "20251125-100604.000001-aa"}, want: []string{"20251125-100503", "20251125-100604"}},
		{in: []string{"20251125-100503.000001-aa", "20251125-100503.000001-ab", "20251125-100503.2"}, want: []string{"20251125-100503.000001-aa", "20251125-100503.000001-ab", "20251125-100503.2"}},
		{in: []string{"20251125-100503.000001-aa", "20251125-100503.000001-aa"}, want: []string{"20251125-100503", "20251125-100503"}},
	}
	for _, tt := range tests {
		if got := shortIDs(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("shortIDs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRelativeTime(t *testing.T) {
	now := lsNow
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{-time.Minute, "Less than a second ago"}, // a clock ahead of ours
		{0, "Less than a second ago"},
		{time.Second, "1 second ago"},
		{45 * time.Second, "45 seconds ago"},
		{90 * time.Second, "About a minute ago"},
		{2 * time.Minute, "2 minutes ago"},
		{time.Hour, "About an hour ago"},
		{5 * time.Hour, "5 hours ago"},
		{3 * 24 * time.Hour, "3 days ago"},
		{21 * 24 * time.Hour, "3 weeks ago"},
	}
	for _, tt := range tests {
		if got := relativeTime(now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("relativeTime(now - %v) = %q, want %q", tt.ago, got, tt.want)
		}
	}
}

// TestLsRows covers the row of each kind of build, truncated and not.
func TestLsRows(t *testing.T) {
	long := "failed to solve: process \"/bin/sh -c go build ./...\" did not complete successfully:\nexit code: 1"
	info := &buildv1.BuildInfo{
		BuildId: "20251125-100503.000001-aaaaaaaaaa", State: buildv1.BuildState_BUILD_STATE_FAILED,
		Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", GitCommit: "main", ImageTag: "r.example/app:v1"},
		Commit:  "1a2b3c4d5e6f7a8b9c0d", CreateTime: timestamppb.New(lsNow.Add(-2 * time.Minute)),
		StartTime: timestamppb.New(lsNow.Add(-2 * time.Minute)), EndTime: timestamppb.New(lsNow.Add(-time.Minute)),
		Error: &buildv1.BuildError{Message: long},
	}
	running := &buildv1.BuildInfo{BuildId: "b-2", State: buildv1.BuildState_BUILD_STATE_BUILDING, StartTime: timestamppb.New(lsNow.Add(-90 * time.Second))}
	succeeded := &buildv1.BuildInfo{BuildId: "b-3", State: buildv1.BuildState_BUILD_STATE_SUCCEEDED, Result: &buildv1.BuildResult{Image: testImage}}
	got := buildRows([]*buildv1.BuildInfo{info, running, succeeded}, rowOptions{now: lsNow})
	want := []buildRow{
		{ID: "20251125-100503", State: "failed", Status: "failed", Repo: "https://git.example/app.git", Ref: "main", Commit: "1a2b3c4d5e6f", Tag: "r.example/app:v1",
			Created: "2 minutes ago", CreatedAt: "2025-11-25T10:08:00Z", Duration: "1m0s", Error: "failed to solve: process \"/bin/sh -c go…"},
		{ID: "b-2", State: "building", Status: "building", Duration: "1m30s"},
		{ID: "b-3", State: "succeeded", Status: "succeeded", Image: testImage},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows =\n%+v\nwant\n%+v", got, want)
	}
	full := buildRows([]*buildv1.BuildInfo{info}, rowOptions{now: lsNow, noTrunc: true})[0]
	if full.ID != info.GetBuildId() || full.Commit != info.GetCommit() || full.Created != "2025-11-25T10:08:00Z" || full.Error != strings.ReplaceAll(long, "\n", " ") {
		t.Errorf("--no-trunc row = %+v, want the whole id, commit, time and error (on one line)", full)
	}
}

// TestLsHelpDocumentsFields: every field of a row is in the ls help, and
// has a header.
func TestLsHelpDocumentsFields(t *testing.T) {
	r := runCLI(t, "builds", "ls", "--help")
	typ := reflect.TypeOf(buildRow{})
	header := reflect.ValueOf(rowHeader)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if !strings.Contains(r.stdout, "."+name+" ") {
			t.Errorf("ls --help does not document .%s", name)
		}
		if header.Field(i).String() == "" {
			t.Errorf("rowHeader.%s is empty", name)
		}
	}
}
